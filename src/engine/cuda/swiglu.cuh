// SwiGLU of the feed-forward block: silu(gate) * up in place of gate.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "chatai/core/status.hpp"

namespace chatai::engine::cuda {

// gate[i] = silu(gate[i]) * up[i] for i < n (gate, up: [n_tokens × n_ff] flattened).
// Errors: those of the launch.
status launch_swiglu(float* gate, const float* up, std::int64_t n, cudaStream_t stream);

}  // namespace chatai::engine::cuda
