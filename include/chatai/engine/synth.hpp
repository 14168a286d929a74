// Synthetic models: GGUF files of a real model's shape with seeded random weights and a real
// tokenizer, so that machines that cannot download models can run and measure real sizes.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "chatai/core/status.hpp"
#include "chatai/engine/model.hpp"
#include "chatai/engine/tensor_type.hpp"

namespace chatai::engine {

// The dimensions of a llama-family model. Thread safety: a value type.
struct synth_shape {
  std::string_view name;
  std::int64_t n_vocab = 0;
  std::int64_t n_ctx = 0;
  std::int64_t n_embd = 0;
  std::int64_t n_layer = 0;
  std::int64_t n_head = 0;
  std::int64_t n_head_kv = 0;
  std::int64_t n_ff = 0;
  float rope_freq_base = 10000.0f;
  bool tied_output = false;  // no output.weight: the embedding serves
  std::int64_t head_dim = 0;  // 0: n_embd / n_head
  std::int64_t rope_dim = 0;  // rotated leading elements of each head; 0: head_dim
};

// The named shapes: smollm2-135m, llama-3.2-1b, llama-3.1-8b.
std::span<const synth_shape> synth_shapes() noexcept;
std::optional<synth_shape> find_synth_shape(std::string_view name) noexcept;

// Thread safety: a value type.
struct synth_options {
  synth_shape shape;
  // The tensors and keys of this architecture's conversions: qwen2's biases, qwen3's head
  // norms, phi3's fused matrices, gemma2's post-norms and soft caps, gemma3's post-norms and
  // head norms.
  model_arch arch = model_arch::llama;
  // Gemma only (the keys are written when set): the sliding window (0: the architecture's
  // default, 4096 for gemma2 and 512 for gemma3) and the soft caps (negative: gemma2's 50 on
  // scores and 30 on logits; gemma3 none).
  std::int64_t sliding_window = 0;
  float attn_softcap = -1.0f;
  float final_softcap = -1.0f;
  ggml_type type = ggml_type::q8_0;  // of every matrix; norms stay f32
  std::uint64_t seed = 1;
  // A GGUF file whose tokenizer.* keys are copied (the vocabulary padded with unused tokens
  // up to shape.n_vocab); empty: no tokenizer, for backend tests only.
  std::filesystem::path tokenizer;
  int threads = 0;  // 0: one per hardware thread
};

// Weight bytes of a model of `shape` in `type` (what one decode step reads, less the
// embedding rows): every matrix but the token embedding, plus the embedding when tied.
std::int64_t synth_matrix_bytes(const synth_shape& shape, ggml_type type) noexcept;

// Writes the model to `out`, tensor by tensor, holding a few rows at a time in memory. The
// weights are uniform random values with a standard deviation of 1 / sqrt(fan-in) (the
// output projections of each block scaled down by sqrt(2 n_layer)), norms near 1, so that
// activations keep their scale through every layer. The same seed gives the same file.
// Errors: invalid_argument for a type the backends do not compute with or dimensions that
// do not fit its blocks; those of the tokenizer file (its path named) and of the writer.
status synthesize_model(const synth_options& options, const std::filesystem::path& out);

}  // namespace chatai::engine
