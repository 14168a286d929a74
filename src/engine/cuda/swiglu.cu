// The element-wise steps: one thread per element.
#include "check.hpp"
#include "swiglu.cuh"

namespace chatai::engine::cuda {
namespace {

__global__ void swiglu_kernel(float* gate, const float* up, std::int64_t n) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float g = gate[i];
  gate[i] = g / (1.0f + expf(-g)) * up[i];
}

__global__ void geglu_kernel(float* gate, const float* up, std::int64_t n) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float g = gate[i];
  gate[i] = 0.5f * g * (1.0f + tanhf(0.7978845608028654f * (g + 0.044715f * g * g * g))) * up[i];
}

__global__ void scale_kernel(float* x, std::int64_t n, float scale) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) x[i] *= scale;
}

__global__ void soft_cap_kernel(float* x, std::int64_t n, float cap) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) x[i] = cap * tanhf(x[i] / cap);
}

constexpr unsigned threads = 256;

unsigned blocks(std::int64_t n) { return static_cast<unsigned>((n + threads - 1) / threads); }

}  // namespace

status launch_geglu(float* gate, const float* up, std::int64_t n, cudaStream_t stream) {
  if (n == 0) return {};
  geglu_kernel<<<blocks(n), threads, 0, stream>>>(gate, up, n);
  CHATAI_CUDA_CHECK_LAUNCH();
  return {};
}

status launch_scale(float* x, std::int64_t n, float scale, cudaStream_t stream) {
  if (n == 0) return {};
  scale_kernel<<<blocks(n), threads, 0, stream>>>(x, n, scale);
  CHATAI_CUDA_CHECK_LAUNCH();
  return {};
}

status launch_soft_cap(float* x, std::int64_t n, float cap, cudaStream_t stream) {
  if (n == 0) return {};
  soft_cap_kernel<<<blocks(n), threads, 0, stream>>>(x, n, cap);
  CHATAI_CUDA_CHECK_LAUNCH();
  return {};
}

status launch_swiglu(float* gate, const float* up, std::int64_t n, cudaStream_t stream) {
  swiglu_kernel<<<blocks(n), threads, 0, stream>>>(gate, up, n);
  CHATAI_CUDA_CHECK_LAUNCH();
  return {};
}

}  // namespace chatai::engine::cuda
