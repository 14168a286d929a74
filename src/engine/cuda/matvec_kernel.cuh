// The matrix-vector kernel template the matvec_<family>.cu files instantiate: one warp per
// weight row, each lane taking 32-element chunks of the row, every token's dot product
// accumulated in registers and summed across the warp at the end.
#pragma once

#include "check.hpp"
#include "matvec.cuh"
#include "plan.hpp"
#include "quant_device.cuh"

namespace chatai::engine::cuda {

inline constexpr int matvec_warps = 4;  // rows per block

template <ggml_type T>
__global__ void __launch_bounds__(matvec_warps * 32) matvec_kernel(matvec_args a) {
  const std::int64_t row = static_cast<std::int64_t>(blockIdx.x) * matvec_warps + threadIdx.x / 32;
  if (row >= a.rows) return;
  const int lane = static_cast<int>(threadIdx.x % 32);
  const std::byte* w = a.w + static_cast<std::size_t>(row) * a.row_bytes;  // [row_bytes]
  const int n_tokens = static_cast<int>(a.n_tokens);
  float acc[max_matvec_tokens] = {};
  const std::int64_t chunks = a.cols / 32;
  for (std::int64_t c = lane; c < chunks; c += 32) {
    float v[32];
    dequantize32<T>(w, c, v);
#pragma unroll
    for (int t = 0; t < max_matvec_tokens; ++t) {
      if (t < n_tokens) {
        const float4* x = reinterpret_cast<const float4*>(a.x + t * a.cols + c * 32);  // [8 × 4]
        float sum = 0.0f;
#pragma unroll
        for (int i = 0; i < 8; ++i) {
          const float4 f = __ldg(x + i);
          sum += v[4 * i] * f.x + v[4 * i + 1] * f.y + v[4 * i + 2] * f.z + v[4 * i + 3] * f.w;
        }
        acc[t] += sum;
      }
    }
  }
#pragma unroll
  for (int t = 0; t < max_matvec_tokens; ++t) {
    if (t < n_tokens) {
      float sum = acc[t];
#pragma unroll
      for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
      if (lane == 0) a.y[t * a.y_stride + row] = sum;
    }
  }
}

template <ggml_type T>
status launch_matvec_of(const matvec_args& a, cudaStream_t stream) {
  const auto blocks = static_cast<unsigned>((a.rows + matvec_warps - 1) / matvec_warps);
  matvec_kernel<T><<<blocks, matvec_warps * 32, 0, stream>>>(a);
  CHATAI_CUDA_CHECK_LAUNCH();
  return {};
}

}  // namespace chatai::engine::cuda
