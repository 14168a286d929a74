// Forward-pass throughput of the CPU backend: prefill of a 128-token prompt and one-token
// decode steps, for the model as shipped and a Q8_0 conversion, with 1 and 2 threads.
//
// Usage: forward_bench [--model PATH] [--threads N,...] [--decode N] [--isa NAME]
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "chatai/engine/backend.hpp"
#include "chatai/engine/cpu_backend.hpp"
#include "chatai/engine/model.hpp"
#include "chatai/engine/quantize.hpp"

using namespace chatai;
using namespace chatai::engine;
namespace fs = std::filesystem;

namespace {

using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point start) {
  return std::chrono::duration<double>(clock_type::now() - start).count();
}

struct figures {
  double prefill = 0;  // tokens per second, best of the repetitions
  double decode = 0;
};

// Best of `repeats`: prefill `prompt`, then `n_decode` single-token steps.
result<figures> measure(backend& b, const std::vector<token_id>& prompt, int n_decode, int repeats) {
  figures best;
  logits_out out;
  for (int r = 0; r < repeats; ++r) {
    auto seq = b.create_sequence(static_cast<std::int64_t>(prompt.size()) + n_decode);
    if (!seq) return std::move(seq).err();
    auto start = clock_type::now();
    CHATAI_RETURN_IF_ERROR(b.forward({{{*seq, prompt, logits_mode::last}}}, out));
    best.prefill = std::max(best.prefill, static_cast<double>(prompt.size()) / seconds_since(start));
    token_id next = prompt.back();
    start = clock_type::now();
    for (int i = 0; i < n_decode; ++i) {
      CHATAI_RETURN_IF_ERROR(b.forward({{{*seq, std::span(&next, 1), logits_mode::last}}}, out));
      next = static_cast<token_id>((next * 31 + 7) % b.hparams().n_vocab);
    }
    best.decode = std::max(best.decode, n_decode / seconds_since(start));
    CHATAI_RETURN_IF_ERROR(b.free_sequence(*seq));
  }
  return best;
}

std::vector<int> parse_list(std::string_view text) {
  std::vector<int> out;
  while (!text.empty()) {
    const auto comma = text.find(',');
    out.push_back(std::atoi(std::string(text.substr(0, comma)).c_str()));
    text = comma == std::string_view::npos ? std::string_view() : text.substr(comma + 1);
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  fs::path model_path = CHATAI_BENCH_MODEL;
  std::vector<int> threads = {1, 2};
  int n_decode = 64;
  cpu_isa isa = best_cpu_isa();
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string_view flag = argv[i];
    if (flag == "--model") {
      model_path = argv[i + 1];
    } else if (flag == "--threads") {
      threads = parse_list(argv[i + 1]);
    } else if (flag == "--decode") {
      n_decode = std::atoi(argv[i + 1]);
    } else if (flag == "--isa") {
      for (cpu_isa candidate : supported_cpu_isas()) {
        if (to_string(candidate) == argv[i + 1]) isa = candidate;
      }
    } else {
      std::fprintf(stderr, "unknown option %s\n", argv[i]);
      return 2;
    }
  }
  if (model_path.empty()) {
    std::fprintf(stderr, "no model: pass --model PATH\n");
    return 2;
  }

  auto shipped = gguf_file::open(model_path);
  if (!shipped) {
    std::fprintf(stderr, "%s\n", shipped.err().message().c_str());
    return 1;
  }
  const fs::path q8_path = fs::temp_directory_path() / ("chatai-forward-bench-" + std::to_string(::getpid()) + ".q8_0.gguf");
  if (auto st = quantize_model(*shipped, q8_path, {ggml_type::q8_0, ggml_type::q8_0}); !st) {
    std::fprintf(stderr, "Q8_0 conversion: %s\n", st.err().message().c_str());
    return 1;
  }

  std::vector<token_id> prompt(128);
  for (std::size_t i = 0; i < prompt.size(); ++i) prompt[i] = static_cast<token_id>(100 + (i * 97) % 20000);

  std::printf("%-34s %-8s %8s %16s %16s\n", "model", "isa", "threads", "prefill tok/s", "decode tok/s");
  int rc = 0;
  for (const fs::path& path : {model_path, q8_path}) {
    auto m = model::load(path);
    if (!m) {
      std::fprintf(stderr, "%s\n", m.err().message().c_str());
      rc = 1;
      break;
    }
    for (int n : threads) {
      auto b = create_cpu_backend(*m, {n, isa});
      if (!b) {
        std::fprintf(stderr, "%s\n", b.err().message().c_str());
        rc = 1;
        break;
      }
      auto f = measure(**b, prompt, n_decode, 3);
      if (!f) {
        std::fprintf(stderr, "%s\n", f.err().message().c_str());
        rc = 1;
        break;
      }
      const std::string name = path == q8_path ? "Q8_0 conversion" : path.filename().string();
      std::printf("%-34s %-8s %8d %16.1f %16.1f\n", name.c_str(), std::string(to_string(isa)).c_str(), n, f->prefill,
                  f->decode);
    }
  }
  std::error_code ec;
  fs::remove(q8_path, ec);
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  std::printf("peak RSS: %.1f MiB\n", static_cast<double>(usage.ru_maxrss) / 1024.0);
  return rc;
}
