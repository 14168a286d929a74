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

// acc[t] += row · x[t] for this lane's chunks of one weight row.
template <ggml_type T>
__device__ __forceinline__ void dot_row(const std::byte* w, const matvec_args& a, int lane, float (&acc)[max_matvec_tokens]) {
  const int n_tokens = static_cast<int>(a.n_tokens);
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
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) acc[t] += __shfl_xor_sync(0xffffffffu, acc[t], offset);
  }
}

// One warp per weight row; the rows of all parts are numbered one after another.
template <ggml_type T>
__global__ void __launch_bounds__(matvec_warps * 32) matvec_kernel(matvec_args a) {
  std::int64_t row = static_cast<std::int64_t>(blockIdx.x) * matvec_warps + threadIdx.x / 32;
  const int lane = static_cast<int>(threadIdx.x % 32);
  const int n_tokens = static_cast<int>(a.n_tokens);
  int p = 0;
  if (!a.glu) {
    while (p < a.n_parts && row >= a.parts[p].rows) row -= a.parts[p++].rows;
  }
  if (p >= a.n_parts || row >= a.parts[p].rows) return;
  const matvec_part& part = a.parts[p];
  float acc[max_matvec_tokens] = {};
  dot_row<T>(part.w + static_cast<std::size_t>(row) * a.row_bytes, a, lane, acc);
  if (a.glu) {
    float up[max_matvec_tokens] = {};
    dot_row<T>(a.parts[1].w + static_cast<std::size_t>(row) * a.row_bytes, a, lane, up);
#pragma unroll
    for (int t = 0; t < max_matvec_tokens; ++t) acc[t] = acc[t] / (1.0f + __expf(-acc[t])) * up[t];
  }
  if (lane == 0) {
#pragma unroll
    for (int t = 0; t < max_matvec_tokens; ++t) {
      if (t < n_tokens) part.y[t * part.y_stride + row] = acc[t];
    }
  }
}

template <ggml_type T>
status launch_matvec_of(const matvec_args& a, cudaStream_t stream) {
  std::int64_t rows = a.parts[0].rows;
  if (!a.glu) {
    for (int p = 1; p < a.n_parts; ++p) rows += a.parts[p].rows;
  }
  const auto blocks = static_cast<unsigned>((rows + matvec_warps - 1) / matvec_warps);
  matvec_kernel<T><<<blocks, matvec_warps * 32, 0, stream>>>(a);
  CHATAI_CUDA_CHECK_LAUNCH();
  return {};
}

}  // namespace chatai::engine::cuda
