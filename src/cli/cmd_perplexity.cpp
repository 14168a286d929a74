// `chatai perplexity`: the perplexity of a text file, computed as llama.cpp's llama-perplexity
// does: the tokens split into windows of --ctx tokens, each scored on its second half.
#include <cmath>
#include <cstdio>

#include "chatai/core/config.hpp"
#include "chatai/engine/sampler.hpp"
#include "commands.hpp"
#include "model_flags.hpp"

namespace chatai::cli {

void add_perplexity_command(CLI::App& app, int& exit_code) {
  struct options {
    model_flags model;
    std::string file;
    std::int64_t ctx = 512;
  };
  auto opts = std::make_shared<options>();
  auto* cmd = app.add_subcommand("perplexity", "print the perplexity of a text file");
  opts->model.add_to(cmd);
  cmd->add_option("-f,--file", opts->file, "text file")->required()->check(CLI::ExistingFile);
  cmd->add_option("-c,--ctx", opts->ctx, "tokens per window")->check(CLI::Range(8, 1 << 20));
  cmd->callback([opts, &exit_code] {
    auto rt = opts->model.load();
    if (!rt) {
      exit_code = 1;
      return;
    }
    auto text = config::read_file(opts->file);
    if (!text) {
      std::fprintf(stderr, "chatai: %s\n", text.err().message().c_str());
      exit_code = 1;
      return;
    }
    const auto& vocab = rt->vocab();
    engine::encode_options eo;
    const auto tokens = vocab.encode(*text, eo);
    const std::int64_t n_ctx = opts->ctx;
    const std::int64_t n_chunks = static_cast<std::int64_t>(tokens.size()) / n_ctx;
    if (n_chunks == 0) {
      std::fprintf(stderr, "chatai: the file has %zu tokens, fewer than one window of %lld\n", tokens.size(),
                   static_cast<long long>(n_ctx));
      exit_code = 1;
      return;
    }
    const bool add_bos = vocab.add_bos() && vocab.bos() >= 0;
    const std::int64_t first = n_ctx / 2;
    double nll = 0.0;
    std::int64_t count = 0;
    auto& compute = rt->compute();
    engine::logits_out logits;
    std::printf("tokens: %zu, windows: %lld of %lld\n", tokens.size(), static_cast<long long>(n_chunks),
                static_cast<long long>(n_ctx));
    for (std::int64_t c = 0; c < n_chunks; ++c) {
      std::vector<engine::token_id> window(tokens.begin() + c * n_ctx, tokens.begin() + (c + 1) * n_ctx);
      if (add_bos) window[0] = vocab.bos();
      auto seq = compute.create_sequence(n_ctx);
      if (!seq) {
        std::fprintf(stderr, "chatai: %s\n", seq.err().message().c_str());
        exit_code = 1;
        return;
      }
      engine::batch b;
      b.entries.push_back({*seq, window, engine::logits_mode::all});
      auto st = compute.forward(b, logits);
      (void)compute.free_sequence(*seq);
      if (!st) {
        std::fprintf(stderr, "chatai: %s\n", st.err().message().c_str());
        exit_code = 1;
        return;
      }
      for (std::int64_t j = first; j < n_ctx - 1; ++j) {
        const auto row = logits.row(j);
        nll -= engine::sampler::logprob_of(row, window[static_cast<std::size_t>(j + 1)]).logprob;
        ++count;
      }
      std::printf("[%lld] %.4f\n", static_cast<long long>(c + 1), std::exp(nll / static_cast<double>(count)));
      std::fflush(stdout);
    }
    std::printf("perplexity: %.6f\n", std::exp(nll / static_cast<double>(count)));
  });
}

}  // namespace chatai::cli
