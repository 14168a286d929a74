// One lane's share of a matrix-vector row product, split so that a warp's loads are
// contiguous: the eight lanes on a 32-element chunk read neighbouring weight bytes and
// neighbouring activations. Host code too, so that the split is tested without a GPU.
#pragma once

#include <cstddef>
#include <cstdint>

#include "plan.hpp"
#include "quant_device.cuh"

namespace chatai::engine::cuda {

inline constexpr int warp_lanes = 32;
inline constexpr int chunks_per_group = warp_lanes / lanes_per_chunk;

// The activation rows a kernel is compiled for: the registers of its products grow with
// them, so a step of n tokens runs the kernel of the smallest width that holds n.
inline constexpr int matvec_width(std::int64_t n_tokens) noexcept {
  return n_tokens <= 1 ? 1 : n_tokens <= 2 ? 2 : n_tokens <= 4 ? 4 : 8;
}
static_assert(matvec_width(max_matvec_tokens) == max_matvec_tokens);

// f.template operator()<N>() for N = matvec_width(n_tokens): what runs a step of n tokens,
// on the device (the launch) and in the host tests alike.
template <class F>
decltype(auto) with_matvec_width(std::int64_t n_tokens, F&& f) {
  switch (matvec_width(n_tokens)) {
    case 1: return f.template operator()<1>();
    case 2: return f.template operator()<2>();
    case 4: return f.template operator()<4>();
    default: return f.template operator()<8>();
  }
}

// Chunk groups whose weights a lane loads before its first product, for `Products` = weight
// rows × activation rows: more bytes in flight for few products, fewer registers for many.
template <int Products>
inline constexpr int groups_per_step = Products <= 2 ? 8 : 4;

// acc[r][t] += lane `lane`'s part of rows[r] · x[t] for each of the R rows and t < n_tokens
// (at most N); the rows share each load of x. In each step the lane takes elements
// [4 q, 4 q + 4), q = lane % 8, of chunks 4 g + lane / 8 for each group g; the 32 lanes'
// parts add up to the whole products.
//   rows: R weight rows of `cols` elements (a multiple of 32) each, in T's file layout
//   x:    [n_tokens × cols]
template <ggml_type T, int N, int R>
CHATAI_HOST_DEVICE void dot_lane(const std::byte* const (&rows)[R], const float* x, std::int64_t cols, int n_tokens,
                                 int lane, float (&acc)[R][N]) {
  constexpr int groups = groups_per_step<N * R>;
  const int chunks = static_cast<int>(cols / 32);
  const int q = lane % lanes_per_chunk;
  for (int c0 = lane / lanes_per_chunk; c0 < chunks; c0 += chunks_per_group * groups) {
    float v[R][groups][4] = {};
#pragma unroll
    for (int g = 0; g < groups; ++g) {
      const int c = c0 + chunks_per_group * g;
      if (c < chunks) {
#pragma unroll
        for (int r = 0; r < R; ++r) dequantize4<T>(rows[r], c, q, v[r][g]);
      }
    }
#pragma unroll
    for (int t = 0; t < N; ++t) {
      if (t >= n_tokens) break;
      const float* xt = x + static_cast<std::int64_t>(t) * cols;  // [cols]
      float sum[R] = {};
#pragma unroll
      for (int g = 0; g < groups; ++g) {
        const int c = c0 + chunks_per_group * g;
        if (c < chunks) {
          const float4 f = load(reinterpret_cast<const float4*>(xt + 32 * c) + q);
#pragma unroll
          for (int r = 0; r < R; ++r) sum[r] += v[r][g][0] * f.x + v[r][g][1] * f.y + v[r][g][2] * f.z + v[r][g][3] * f.w;
        }
      }
#pragma unroll
      for (int r = 0; r < R; ++r) acc[r][t] += sum[r];
    }
  }
}

}  // namespace chatai::engine::cuda
