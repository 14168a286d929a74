// The residual add fused with RMSNorm: one read of the residual row serves both.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "chatai/core/status.hpp"

namespace chatai::engine::cuda {

// For t < n_tokens, with row = rows ? rows[t] : t: x[row] += add[row] (when add is not
// null), then h[t] = x[row] / rms(x[row]) * weight. x, add: [* × n]; h: [n_tokens × n];
// weight: [n]. h may be x when rows is null: each element is read before it is overwritten
// (qwen3 normalizes its query and key heads in place). Errors: those of the launch.
status launch_add_rmsnorm(float* x, const float* add, const float* weight, float eps, std::int64_t n_tokens,
                          std::int64_t n, const std::int32_t* rows, float* h, cudaStream_t stream);

}  // namespace chatai::engine::cuda
