// The matrix-vector kernel template the matvec_<family>.cu files instantiate: one warp per
// weight row (or per gate and up row), the lanes' parts of the row (matvec_lane.cuh) applied
// to every token in registers and summed across the warp at the end; one kernel per weight
// type, width (tokens) and GLU.
#pragma once

#include "check.hpp"
#include "matvec.cuh"
#include "matvec_lane.cuh"
#include "plan.hpp"
#include "quant_device.cuh"

namespace chatai::engine::cuda {

inline constexpr int matvec_warps = 4;  // rows per block

// acc[r][t] += rows[r] · x[t] for t < n_tokens, in every lane: the lanes' parts summed
// across the warp.
template <ggml_type T, int N, int R>
__device__ __forceinline__ void dot_rows(const std::byte* const (&rows)[R], const matvec_args& a, int lane,
                                         float (&acc)[R][N]) {
  dot_lane<T, N, R>(rows, a.x, a.cols, static_cast<int>(a.n_tokens), lane, acc);
#pragma unroll
  for (int r = 0; r < R; ++r) {
#pragma unroll
    for (int t = 0; t < N; ++t) {
#pragma unroll
      for (int offset = warp_lanes / 2; offset > 0; offset /= 2) acc[r][t] += __shfl_xor_sync(0xffffffffu, acc[r][t], offset);
    }
  }
}

// One warp per weight row, for up to N tokens; the rows of all parts are numbered one after
// another. With Glu (a.glu) the warp takes the row of the gate and of the up matrix together.
template <ggml_type T, int N, bool Glu>
__global__ void __launch_bounds__(matvec_warps * warp_lanes) matvec_kernel(matvec_args a) {
  std::int64_t row = static_cast<std::int64_t>(blockIdx.x) * matvec_warps + threadIdx.x / warp_lanes;
  const int lane = static_cast<int>(threadIdx.x % warp_lanes);
  const int n_tokens = static_cast<int>(a.n_tokens);
  int p = 0;
  if constexpr (!Glu) {
    while (p < a.n_parts && row >= a.parts[p].rows) row -= a.parts[p++].rows;
  }
  if (p >= a.n_parts || row >= a.parts[p].rows) return;
  const matvec_part& part = a.parts[p];
  const std::size_t at = static_cast<std::size_t>(row) * a.row_bytes;
  float out[N];
  if constexpr (Glu) {
    const std::byte* rows[2] = {part.w + at, a.parts[1].w + at};  // gate, up
    float acc[2][N] = {};
    dot_rows<T, N, 2>(rows, a, lane, acc);
#pragma unroll
    for (int t = 0; t < N; ++t) out[t] = acc[0][t] / (1.0f + __expf(-acc[0][t])) * acc[1][t];
  } else {
    const std::byte* rows[1] = {part.w + at};
    float acc[1][N] = {};
    dot_rows<T, N, 1>(rows, a, lane, acc);
#pragma unroll
    for (int t = 0; t < N; ++t) out[t] = acc[0][t];
  }
  if (lane == 0) {
#pragma unroll
    for (int t = 0; t < N; ++t) {
      if (t < n_tokens) part.y[t * part.y_stride + row] = out[t];
    }
  }
}

template <ggml_type T, int N>
status launch_matvec_width(const matvec_args& a, cudaStream_t stream) {
  std::int64_t rows = a.parts[0].rows;
  if (!a.glu) {
    for (int p = 1; p < a.n_parts; ++p) rows += a.parts[p].rows;
  }
  const auto blocks = static_cast<unsigned>((rows + matvec_warps - 1) / matvec_warps);
  if (a.glu) {
    matvec_kernel<T, N, true><<<blocks, matvec_warps * warp_lanes, 0, stream>>>(a);
  } else {
    matvec_kernel<T, N, false><<<blocks, matvec_warps * warp_lanes, 0, stream>>>(a);
  }
  CHATAI_CUDA_CHECK_LAUNCH();
  return {};
}

template <ggml_type T>
status launch_matvec_of(const matvec_args& a, cudaStream_t stream) {
  return with_matvec_width(a.n_tokens, [&]<int N>() { return launch_matvec_width<T, N>(a, stream); });
}

}  // namespace chatai::engine::cuda
