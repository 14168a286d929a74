// Biases, rotary embedding and the KV cache store fused in one pass over q, k and v.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "chatai/core/status.hpp"
#include "layout.hpp"
#include "reference.hpp"

namespace chatai::engine::cuda {

// What reference_rope_store does, on the device: q[t] += bq, k[t] += bk, v[t] += bv
// (biases may be null), q and k rotated by map.positions[t], k and v stored as f16 in the
// pools at that position. q: [n_tokens × q_dim]; k, v: [n_tokens × kv_dim];
// inv_freq: [rope_dim / 2]. Errors: those of the launch.
status launch_rope_store(const rope_params& p, float* q, float* k, const float* v, const float* bq, const float* bk,
                         const float* bv, const double* inv_freq, std::int64_t n_tokens, const step_map& map,
                         const kv_layout& layout, std::int64_t layer, std::uint16_t* k_cache, std::uint16_t* v_cache,
                         cudaStream_t stream);

}  // namespace chatai::engine::cuda
