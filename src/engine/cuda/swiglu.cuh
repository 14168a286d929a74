// The element-wise steps: the gated activations of the feed-forward block (silu(gate) * up or
// gelu(gate) * up in place of gate), scaling, and soft caps.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "chatai/core/status.hpp"

namespace chatai::engine::cuda {

// gate[i] = silu(gate[i]) * up[i] for i < n (gate, up: [n_tokens × n_ff] flattened).
// Errors: those of the launch.
status launch_swiglu(float* gate, const float* up, std::int64_t n, cudaStream_t stream);

// gate[i] = gelu(gate[i]) * up[i] for i < n, GELU by its tanh approximation (Gemma's GeGLU).
status launch_geglu(float* gate, const float* up, std::int64_t n, cudaStream_t stream);

// x[i] *= scale for i < n.
status launch_scale(float* x, std::int64_t n, float scale, cudaStream_t stream);

// x[i] = cap * tanh(x[i] / cap) for i < n.
status launch_soft_cap(float* x, std::int64_t n, float cap, cudaStream_t stream);

}  // namespace chatai::engine::cuda
