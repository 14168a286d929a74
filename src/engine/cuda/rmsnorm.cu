// Residual add and RMSNorm: one block per token.
#include "block_reduce.cuh"
#include "check.hpp"
#include "rmsnorm.cuh"

namespace chatai::engine::cuda {
namespace {

__global__ void add_rmsnorm_kernel(float* x, const float* add, const float* weight, float eps, std::int64_t n,
                                   const std::int32_t* rows, float* h) {
  __shared__ float scratch[32];
  const std::int64_t t = blockIdx.x;
  const std::int64_t row = rows ? rows[t] : t;
  float* xr = x + row * n;  // [n]
  float sum = 0.0f;
  for (std::int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    float value = xr[i];
    if (add) {
      value += add[row * n + i];
      xr[i] = value;
    }
    sum += value * value;
  }
  const float scale = rsqrtf(block_sum(sum, scratch) / static_cast<float>(n) + eps);
  for (std::int64_t i = threadIdx.x; i < n; i += blockDim.x) h[t * n + i] = xr[i] * scale * weight[i];
}

}  // namespace

status launch_add_rmsnorm(float* x, const float* add, const float* weight, float eps, std::int64_t n_tokens,
                          std::int64_t n, const std::int32_t* rows, float* h, cudaStream_t stream) {
  add_rmsnorm_kernel<<<static_cast<unsigned>(n_tokens), 256, 0, stream>>>(x, add, weight, eps, n, rows, h);
  CHATAI_CUDA_CHECK_LAUNCH();
  return {};
}

}  // namespace chatai::engine::cuda
