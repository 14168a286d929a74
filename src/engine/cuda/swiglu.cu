// SwiGLU: one thread per element.
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

}  // namespace

status launch_swiglu(float* gate, const float* up, std::int64_t n, cudaStream_t stream) {
  constexpr unsigned threads = 256;
  swiglu_kernel<<<static_cast<unsigned>((n + threads - 1) / threads), threads, 0, stream>>>(gate, up, n);
  CHATAI_CUDA_CHECK_LAUNCH();
  return {};
}

}  // namespace chatai::engine::cuda
