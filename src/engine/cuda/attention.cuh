// Attention of a step's queries over the paged KV cache, split along the sequence: each
// part computes a partial softmax over its keys, and a second kernel merges the parts.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "chatai/core/status.hpp"
#include "layout.hpp"
#include "reference.hpp"

namespace chatai::engine::cuda {

// Thread safety: a value type of borrowed device pointers.
struct attention_args {
  rope_params p;
  const float* q = nullptr;               // [n_tokens × n_head × head_dim]
  const std::uint16_t* k_cache = nullptr;  // the key pool of `layout`, f16
  const std::uint16_t* v_cache = nullptr;  // the value pool, f16
  std::int64_t n_tokens = 0;
  step_map map;
  kv_layout layout;
  std::int64_t layer = 0;
  float scale = 1.0f;
  std::int64_t window = 0;        // > 0: a query at position p sees positions p - window + 1 .. p
  float softcap = 0.0f;           // > 0: scores become softcap * tanh(score / softcap)
  std::int64_t n_splits = 1;      // parts per (token, head); keys per part: split_keys
  std::int64_t split_keys = 0;    // a multiple of attention_chunk; n_splits * split_keys >= every length
  float* partial = nullptr;       // [n_tokens × n_head × n_splits × (head_dim + 2)] when n_splits > 1
  float* out = nullptr;           // [n_tokens × n_head × head_dim]
};

// Bytes of `partial` for these sizes.
inline std::int64_t attention_partial_floats(std::int64_t n_tokens, std::int64_t n_head, std::int64_t n_splits,
                                             std::int64_t head_dim) {
  return n_tokens * n_head * n_splits * (head_dim + 2);
}

// What reference_attention computes. Errors: invalid_argument for a head wider than
// max_head_dim; those of the launches.
status launch_attention(const attention_args& a, cudaStream_t stream);

}  // namespace chatai::engine::cuda
