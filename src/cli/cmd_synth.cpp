// `chatai synth`: a GGUF model of a real shape with seeded random weights and a real
// tokenizer, for measuring real sizes where models cannot be downloaded.
#include <chrono>
#include <cstdio>
#include <filesystem>

#include "chatai/engine/synth.hpp"
#include "commands.hpp"

namespace chatai::cli {

namespace {

// The vocabulary a shape borrows when --tokenizer is not given: the largest of the shared
// test vocabularies that fits its embedding table.
std::string_view default_tokenizer(std::string_view shape) {
  return shape == "smollm2-135m" ? "ggml-vocab-llama-spm.gguf" : "ggml-vocab-deepseek-llm.gguf";
}

std::filesystem::path find_tokenizer(const std::string& first_dir, std::string_view file) {
  for (const std::string& dir : {first_dir, std::string("../shared/testdata/tokenizers"), std::string("shared/testdata/tokenizers")}) {
    if (dir.empty()) continue;
    const auto p = std::filesystem::path(dir) / file;
    if (std::filesystem::exists(p)) return p;
  }
  return {};
}

}  // namespace

void add_synth_command(CLI::App& app, int& exit_code) {
  struct options {
    std::string arch = "llama";
    std::string shape;
    std::string type = "q8_0";
    std::string out;
    std::string tokenizer;
    std::string tokenizer_dir;
    std::uint64_t seed = 1;
    int threads = 0;
    std::int64_t head_dim = 0;
    std::int64_t rope_dim = 0;
    std::int64_t sliding_window = 0;
    float attn_softcap = -1.0f;
    float final_softcap = -1.0f;
  };
  auto opts = std::make_shared<options>();
  auto* cmd = app.add_subcommand("synth", "write a model of a real shape with random weights");
  std::vector<std::string> shape_names;
  for (const auto& s : engine::synth_shapes()) shape_names.emplace_back(s.name);
  cmd->add_option("--arch", opts->arch,
                  "architecture: its tensors and keys (qwen2 biases, qwen3 head norms, phi3 fused matrices, "
                  "gemma2/gemma3 post-norms, soft caps and sliding windows)")
      ->check(CLI::IsMember({"llama", "qwen2", "qwen3", "phi3", "gemma2", "gemma3"}));
  cmd->add_option("--shape", opts->shape, "model shape")->required()->check(CLI::IsMember(shape_names));
  cmd->add_option("--type", opts->type, "weight type")
      ->check(CLI::IsMember({"f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q2_k", "q3_k",
                              "q4_k", "q5_k", "q6_k"}));
  cmd->add_option("--head-dim", opts->head_dim, "elements per attention head instead of the shape's")
      ->check(CLI::Range(2, 1024));
  cmd->add_option("--rope-dim", opts->rope_dim, "rotated elements of each head (partial rotary) instead of all")
      ->check(CLI::Range(2, 1024));
  cmd->add_option("--sliding-window", opts->sliding_window,
                  "gemma2/gemma3: positions a windowed layer sees (default 4096 and 512)")
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{1} << 30));
  cmd->add_option("--attn-softcap", opts->attn_softcap, "gemma2: the soft cap of attention scores (default 50; 0: none)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--final-softcap", opts->final_softcap,
                  "gemma2/gemma3: the soft cap of the logits (default 30 and none; 0: none)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("-o,--output", opts->out, "GGUF file to write")->required();
  cmd->add_option("--seed", opts->seed, "random seed");
  cmd->add_option("--tokenizer", opts->tokenizer,
                  "GGUF file whose tokenizer to copy (default: a vocabulary of ../shared/testdata/tokenizers)")
      ->check(CLI::ExistingFile);
  cmd->add_option("--tokenizer-dir", opts->tokenizer_dir, "a folder searched first for the default vocabulary")
      ->check(CLI::ExistingDirectory);
  cmd->add_option("-t,--threads", opts->threads, "threads (0: one per hardware thread)")->check(CLI::NonNegativeNumber);
  cmd->callback([opts, &exit_code] {
    engine::synth_options o;
    o.shape = *engine::find_synth_shape(opts->shape);
    if (opts->head_dim > 0) o.shape.head_dim = opts->head_dim;
    if (opts->rope_dim > 0) o.shape.rope_dim = opts->rope_dim;
    for (engine::model_arch arch : {engine::model_arch::llama, engine::model_arch::qwen2, engine::model_arch::qwen3,
                                    engine::model_arch::phi3, engine::model_arch::gemma2, engine::model_arch::gemma3}) {
      if (engine::to_string(arch) == opts->arch) o.arch = arch;
    }
    o.sliding_window = opts->sliding_window;
    o.attn_softcap = opts->attn_softcap;
    o.final_softcap = opts->final_softcap;
    o.type = *engine::parse_ggml_type(opts->type);
    o.seed = opts->seed;
    o.threads = opts->threads;
    o.tokenizer = opts->tokenizer;
    if (o.tokenizer.empty()) {
      o.tokenizer = find_tokenizer(opts->tokenizer_dir, default_tokenizer(opts->shape));
      if (o.tokenizer.empty()) {
        std::fprintf(stderr, "chatai: --tokenizer: %s was not found (--tokenizer-dir, ../shared/testdata/tokenizers); name a file\n",
                     std::string(default_tokenizer(opts->shape)).c_str());
        exit_code = 1;
        return;
      }
    }
    const auto t0 = std::chrono::steady_clock::now();
    if (auto st = engine::synthesize_model(o, opts->out); !st) {
      std::fprintf(stderr, "chatai: %s\n", st.err().message().c_str());
      exit_code = 1;
      return;
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("%s: %s %s %s, seed %llu, %.1f s\n", opts->out.c_str(), opts->arch.c_str(), opts->shape.c_str(),
                opts->type.c_str(), static_cast<unsigned long long>(opts->seed), s);
  });
}

}  // namespace chatai::cli
