// `chatai bench`: prefill and decode speed of a model on this machine, and peak memory.
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <random>
#include <vector>

#include "chatai/engine/generator.hpp"
#include "commands.hpp"
#include "model_flags.hpp"

namespace chatai::cli {

namespace {
std::int64_t peak_rss_bytes() {
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  return static_cast<std::int64_t>(usage.ru_maxrss) * 1024;
}

// Weight bytes one decode step reads: every matrix but the embedding table (of which it
// reads a row per token), the output projection included.
std::int64_t matrix_bytes_per_step(const engine::model& m) {
  const auto bytes = [](const engine::weight_matrix& w) { return w.rows * static_cast<std::int64_t>(w.row_bytes); };
  std::int64_t total = bytes(m.output());
  for (const auto& l : m.layers()) {
    total += bytes(l.wq) + bytes(l.wk) + bytes(l.wv) + bytes(l.wo) + bytes(l.w_gate) + bytes(l.w_up) + bytes(l.w_down);
  }
  return total;
}
}  // namespace

void add_bench_command(CLI::App& app, int& exit_code) {
  struct options {
    model_flags model;
    std::int64_t prompt = 128;
    std::int64_t decode = 64;
    std::int64_t decode_prompt = 4;
    std::vector<std::int64_t> batches{1};
    std::int64_t repeat = 3;
    bool json = false;
  };
  auto opts = std::make_shared<options>();
  auto* cmd = app.add_subcommand("bench", "measure prefill and decode tokens/s");
  opts->model.add_to(cmd);
  cmd->add_option("-p,--prompt-tokens", opts->prompt, "prompt length")->check(CLI::Range(1, 1 << 16));
  cmd->add_option("-n,--decode-tokens", opts->decode, "tokens decoded per sequence")->check(CLI::Range(1, 1 << 16));
  cmd->add_option("--decode-prompt", opts->decode_prompt,
                  "prompt length of each decoding sequence (decode starts at this position)")
      ->check(CLI::Range(1, 1 << 16));
  cmd->add_option("-b,--batch", opts->batches, "sequences decoding together; several (1,8,64) measure each in turn")
      ->delimiter(',')
      ->check(CLI::Range(1, 256));
  cmd->add_option("-r,--repeat", opts->repeat, "prefill runs (the best counts)")->check(CLI::Range(1, 100));
  cmd->add_flag("--json", opts->json, "print one JSON object per batch size");
  cmd->callback([opts, &exit_code] {
    auto rt = opts->model.load();
    if (!rt) {
      exit_code = 1;
      return;
    }
    using clock = std::chrono::steady_clock;
    auto& compute = rt->compute();
    const auto n_vocab = static_cast<std::int32_t>(rt->hparams().n_vocab);
    std::mt19937 rng(1234);
    std::uniform_int_distribution<std::int32_t> any_token(100, n_vocab - 1);
    std::vector<engine::token_id> prompt(static_cast<std::size_t>(opts->prompt));
    for (auto& t : prompt) t = any_token(rng);

    auto fail = [&](const error& e) {
      std::fprintf(stderr, "chatai: %s\n", e.message().c_str());
      exit_code = 1;
    };

    // Prefill: the whole prompt in one step, best of `repeat`.
    double best_prefill = 0.0;
    engine::logits_out logits;
    for (std::int64_t r = 0; r < opts->repeat; ++r) {
      auto seq = compute.create_sequence(opts->prompt + 1);
      if (!seq) return fail(seq.err());
      engine::batch b;
      b.entries.push_back({*seq, prompt, engine::logits_mode::last});
      const auto t0 = clock::now();
      auto st = compute.forward(b, logits);
      const double s = std::chrono::duration<double>(clock::now() - t0).count();
      (void)compute.free_sequence(*seq);
      if (!st) return fail(st.err());
      best_prefill = std::max(best_prefill, static_cast<double>(opts->prompt) / s);
    }

    // Decode: `batch` sequences with a short prompt each (--decode-prompt), greedy, past EOS. The first two
    // steps (the prompts, then the first decode step, which may set up the backend's graph
    // of this batch shape) are not timed.
    for (const std::int64_t batch : opts->batches) {
      engine::generator_options go;
      go.context = std::max<std::int64_t>(16, opts->decode_prompt) + opts->decode + 8;
      engine::generator gen(compute, rt->vocab(), go);
      for (std::int64_t i = 0; i < batch; ++i) {
        engine::generation_request req;
        req.prompt.resize(static_cast<std::size_t>(opts->decode_prompt));
        for (auto& t : req.prompt) t = any_token(rng);
        req.sampling.temperature = 0.0f;
        req.max_tokens = opts->decode + 2;
        req.ignore_eos = true;
        auto id = gen.add(std::move(req));
        if (!id) return fail(id.err());
      }
      for (int warm_up = 0; warm_up < 2; ++warm_up) {
        auto events = gen.step();
        if (!events) return fail(events.err());
      }
      std::int64_t decoded = 0;
      const auto t0 = clock::now();
      while (gen.active() > 0) {
        auto events = gen.step();
        if (!events) return fail(events.err());
        for (const auto& ev : *events) decoded += static_cast<std::int64_t>(ev.tokens.size());
      }
      const double decode_s = std::chrono::duration<double>(clock::now() - t0).count();
      const double decode_tps = decode_s > 0 ? static_cast<double>(decoded) / decode_s : 0.0;
      const auto rss = peak_rss_bytes();

      if (opts->json) {
        std::printf(
            "{\"model\":\"%s\",\"device\":\"%s\",\"backend\":\"%s\",\"prompt_tokens\":%lld,\"decode_tokens\":%lld,"
            "\"batch\":%lld,\"prefill_tokens_per_s\":%.2f,\"decode_tokens_per_s\":%.2f,\"weight_bytes_per_step\":%lld,"
            "\"peak_rss_bytes\":%lld}\n",
            opts->model.model.c_str(), opts->model.device.c_str(), compute.description().c_str(),
            static_cast<long long>(opts->prompt), static_cast<long long>(opts->decode), static_cast<long long>(batch),
            best_prefill, decode_tps, static_cast<long long>(matrix_bytes_per_step(rt->weights())),
            static_cast<long long>(rss));
      } else {
        std::printf("backend: %s\n", compute.description().c_str());
        std::printf("prefill: %lld tokens, %.1f tokens/s\n", static_cast<long long>(opts->prompt), best_prefill);
        std::printf("decode:  %lld sequences x %lld tokens, %.1f tokens/s in all\n", static_cast<long long>(batch),
                    static_cast<long long>(opts->decode), decode_tps);
        std::printf("peak RSS: %.1f MiB\n", static_cast<double>(rss) / (1024.0 * 1024.0));
      }
      std::fflush(stdout);
    }
  });
}

}  // namespace chatai::cli
