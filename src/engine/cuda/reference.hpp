// Plain C++ references of every CUDA kernel, on the same layouts: what the GPU tests compare
// the kernels with, and themselves tested against the CPU backend's scalar references.
// Thread safety: every function is pure (it writes only its outputs) and safe from any thread.
#pragma once

#include <cstddef>
#include <cstdint>

#include "chatai/engine/tensor_type.hpp"
#include "layout.hpp"

namespace chatai::engine::cuda {

// matvec / gemm: y[t * y_stride + r] = w.row(r) · x[t] for t < n_tokens, r < rows.
// w: [rows × cols] in `type`, rows of type_size * cols / block_size bytes; x: [n_tokens × cols].
void reference_matmul(ggml_type type, const std::byte* w, std::int64_t rows, std::int64_t cols, const float* x,
                      std::int64_t n_tokens, float* y, std::int64_t y_stride);

// embedding: out[t] = the row tokens[t] of table (dequantized); out: [n_tokens × cols].
void reference_embedding(ggml_type type, const std::byte* table, std::int64_t cols, const std::int32_t* tokens,
                         std::int64_t n_tokens, float* out);

// dequantize: rows × cols of `type` to BF16 (the GEMM's weight tiles).
void reference_dequantize_bf16(ggml_type type, const std::byte* w, std::int64_t rows, std::int64_t cols,
                               std::uint16_t* out);
// to_bf16: n floats to BF16 (the GEMM's activations).
void reference_to_bf16(const float* x, std::int64_t n, std::uint16_t* out);

// rmsnorm: x[t] += add[t] when add is not null, then h[t] = x[t] / rms(x[t]) * weight.
// x, add, h: [n_tokens × n]; weight: [n]. When rows is not null, token t reads and writes
// row rows[t] of x and add (the logits' tokens), and h is dense.
void reference_add_rmsnorm(float* x, const float* add, const float* weight, float eps, std::int64_t n_tokens,
                           std::int64_t n, const std::int32_t* rows, float* h);

// rope: q[t] += bq, k[t] += bk, v[t] += bv (biases may be null), q and k rotated by the
// position of token t, then k[t] and v[t] stored as f16 in the caches at that position.
// q: [n_tokens × n_head × head_dim]; k, v: [n_tokens × kv_dim]; inv_freq: [rope_dim / 2];
// k_cache, v_cache: the pools of `layout`.
// Thread safety: a value type.
struct rope_params {
  std::int64_t n_head = 0;
  std::int64_t n_head_kv = 0;
  std::int64_t head_dim = 0;
  std::int64_t rope_dim = 0;
  bool neox = false;  // pairs (i, i + rope_dim / 2) instead of (2i, 2i + 1)
};
void reference_rope_store(const rope_params& p, float* q, float* k, const float* v, const float* bq, const float* bk,
                          const float* bv, const double* inv_freq, std::int64_t n_tokens, const step_map& map,
                          const kv_layout& layout, std::int64_t layer, std::uint16_t* k_cache, std::uint16_t* v_cache);

// attention: out[t, h] = sum over positions j <= positions[t] of softmax_j(scale q[t, h] · k_j) v_j,
// where k_j and v_j are head h / (n_head / n_head_kv) of position j in the caches.
// q, out: [n_tokens × n_head × head_dim].
// With window > 0 a query at position p sees positions p - window + 1 .. p; with softcap > 0
// scores are softcap * tanh(score / softcap).
void reference_attention(const rope_params& p, const float* q, const std::uint16_t* k_cache, const std::uint16_t* v_cache,
                         std::int64_t n_tokens, const step_map& map, const kv_layout& layout, std::int64_t layer,
                         float scale, float* out, std::int64_t window = 0, float softcap = 0.0f);

// swiglu: gate[i] = silu(gate[i]) * up[i] for i < n.
void reference_swiglu(float* gate, const float* up, std::int64_t n);

// geglu: gate[i] = gelu(gate[i]) * up[i] for i < n, GELU by its tanh approximation.
void reference_geglu(float* gate, const float* up, std::int64_t n);

}  // namespace chatai::engine::cuda
