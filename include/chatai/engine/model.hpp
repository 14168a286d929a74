// A llama-family model: hyperparameters read from GGUF metadata and views of its weights in
// the memory-mapped file, validated once at load so that backends can trust every shape.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "chatai/core/status.hpp"
#include "chatai/engine/gguf.hpp"
#include "chatai/engine/tensor_type.hpp"

namespace chatai::engine {

enum class model_arch {
  llama,  // Llama 2 and 3.x, Mistral, SmolLM2, TinyLlama
  qwen2,  // biases on Q, K and V; NEOX rotary pairs
  qwen3,  // qwen2 without biases; each head of Q and K RMS-normalized before rotary
  phi3,   // Phi-3 and Phi-4 mini: fused QKV and gate-up matrices; NEOX rotary pairs
  gemma2,  // norms after attention and FFN too, GELU, scaled embeddings, soft-capped scores and
           // logits, a sliding window on every other layer; NEOX rotary pairs
  gemma3,  // gemma2 with per-head Q/K norms instead of the score cap, a window on five layers in
           // six with their own rotary base
};

std::string_view to_string(model_arch arch) noexcept;

// Which elements of a head rotary embedding rotates together.
enum class rope_pairing {
  adjacent,  // (2i, 2i + 1): llama
  neox,      // (i, i + rope_dim / 2): qwen2, qwen3, phi3, gemma2, gemma3
};

// The activation of the gated feed-forward block: down(act(gate) * up).
enum class ffn_activation {
  silu,       // SwiGLU
  gelu_tanh,  // GeGLU with the tanh approximation of GELU (Gemma)
};

// Thread safety: a value type.
struct model_hparams {
  model_arch arch = model_arch::llama;
  std::int64_t n_vocab = 0;
  std::int64_t n_ctx_train = 0;  // the context length the model was trained for
  std::int64_t n_embd = 0;
  std::int64_t n_layer = 0;
  std::int64_t n_head = 0;
  std::int64_t n_head_kv = 0;    // fewer than n_head: grouped-query attention
  std::int64_t head_dim = 0;
  std::int64_t n_ff = 0;
  float rms_eps = 0.0f;
  float rope_freq_base = 10000.0f;
  float rope_freq_scale = 1.0f;  // linear scaling: positions are multiplied by this
  std::int64_t rope_dim = 0;     // leading elements of each head that rotate (even, <= head_dim)
  rope_pairing rope_pairs = rope_pairing::adjacent;
  bool tied_output = false;      // the output projection is token_embd.weight
  ffn_activation activation = ffn_activation::silu;
  float embed_scale = 1.0f;      // token embeddings are multiplied by this (Gemma: sqrt(n_embd))
  float attn_scale = 0.0f;       // of q . k; set at load (1 / sqrt(head_dim) unless the model says otherwise)
  float attn_softcap = 0.0f;     // > 0: scores become cap * tanh(score / cap) (Gemma 2)
  float final_softcap = 0.0f;    // > 0: the same for the logits
  // Windowed layers attend to the last `sliding_window` positions (their own included): layer
  // i is windowed when sliding_window > 0 and i % swa_pattern < swa_pattern - 1.
  std::int64_t sliding_window = 0;
  std::int64_t swa_pattern = 0;
  // The rotary base and linear scale of windowed layers (Gemma 3); base 0: those of every layer.
  float rope_freq_base_swa = 0.0f;
  float rope_freq_scale_swa = 1.0f;

  std::int64_t q_dim() const noexcept { return n_head * head_dim; }
  bool windowed(std::int64_t layer) const noexcept {
    return sliding_window > 0 && swa_pattern > 0 && layer % swa_pattern < swa_pattern - 1;
  }
  // The first position a query at `position` of `layer` attends to.
  std::int64_t first_visible(std::int64_t layer, std::int64_t position) const noexcept {
    return windowed(layer) && position >= sliding_window ? position - sliding_window + 1 : 0;
  }
  std::int64_t kv_dim() const noexcept { return n_head_kv * head_dim; }
};

// A matrix in the file: `rows` rows of `cols` elements of `type`, each row `row_bytes` long.
// Thread safety: a view into immutable mapped memory.
struct weight_matrix {
  std::string_view name;
  ggml_type type = ggml_type::f32;
  std::int64_t rows = 0;
  std::int64_t cols = 0;
  std::size_t row_bytes = 0;
  const std::byte* data = nullptr;

  const std::byte* row(std::int64_t r) const noexcept { return data + static_cast<std::size_t>(r) * row_bytes; }
};

// One transformer block's weights. A fused matrix in the file (phi3's attn_qkv and ffn_up) is
// bound as views of its row ranges, so backends see the same separate matrices for every
// architecture. Thread safety: immutable once its model is loaded.
struct layer_weights {
  std::vector<float> attn_norm;  // [n_embd]
  weight_matrix wq;              // [q_dim × n_embd]
  weight_matrix wk;              // [kv_dim × n_embd]
  weight_matrix wv;              // [kv_dim × n_embd]
  std::vector<float> bq;         // [q_dim], or empty when the model has no bias
  std::vector<float> bk;         // [kv_dim], or empty
  std::vector<float> bv;         // [kv_dim], or empty
  std::vector<float> q_norm;     // [head_dim]: RMSNorm of each query head before rotary, or empty
  std::vector<float> k_norm;     // [head_dim]: the same for each key head (empty with q_norm)
  weight_matrix wo;              // [n_embd × q_dim]
  std::vector<float> post_attn_norm;  // [n_embd]: RMSNorm of the attention output before the residual add, or empty
  std::vector<float> ffn_norm;   // [n_embd]
  weight_matrix w_gate;          // [n_ff × n_embd]
  weight_matrix w_up;            // [n_ff × n_embd]
  weight_matrix w_down;          // [n_embd × n_ff]
  std::vector<float> post_ffn_norm;  // [n_embd]: RMSNorm of the FFN output before the residual add, or empty
};

// Thread safety: immutable after load; safe to share between backends and threads.
class model {
 public:
  // Maps and validates a GGUF file. Errors: those of gguf_file::open; unsupported for other
  // architectures, weight types the backends do not compute with, RoPE scaling other than
  // none, linear and llama3, or phi3's LongRoPE factors; invalid_argument for a missing or inconsistent key or tensor,
  // with its name and, for tensors, the expected shape.
  static result<std::shared_ptr<const model>> load(const std::filesystem::path& path);
  // The same, over an opened file.
  static result<std::shared_ptr<const model>> from_file(gguf_file file);

  const model_hparams& hparams() const noexcept { return hparams_; }
  const gguf_file& file() const noexcept { return file_; }

  const weight_matrix& token_embedding() const noexcept { return token_embd_; }  // [n_vocab × n_embd]
  std::span<const layer_weights> layers() const noexcept { return layers_; }
  std::span<const float> output_norm() const noexcept { return output_norm_; }   // [n_embd]
  const weight_matrix& output() const noexcept { return output_; }               // [n_vocab × n_embd]
  // Rotary frequency i (of rope_dim / 2) is theta_i = pos * base^(-2i / rope_dim) / factor_i.
  std::span<const float> rope_freq_factors() const noexcept { return rope_freq_factors_; }  // [rope_dim / 2]
  // The angle per position of each rotary pair of `layer` (rope_dim / 2 of them): base,
  // factors and linear scale, or for a windowed layer with its own base, that base and scale.
  std::vector<double> rope_inv_freq(std::int64_t layer) const;

  model(gguf_file file, model_hparams hparams);  // use load(); public for make_shared

 private:
  status bind_weights();

  gguf_file file_;
  model_hparams hparams_;
  weight_matrix token_embd_;
  std::vector<layer_weights> layers_;
  std::vector<float> output_norm_;
  weight_matrix output_;
  std::vector<float> rope_freq_factors_;
};

}  // namespace chatai::engine
