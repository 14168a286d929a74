// Split attention over the paged KV cache: one block per (part, head, token) with an online
// softmax over chunks of attention_chunk keys, then one block per (head, token) to merge.
#include <cuda_fp16.h>

#include "attention.cuh"
#include "block_reduce.cuh"
#include "check.hpp"

namespace chatai::engine::cuda {
namespace {

constexpr int attention_threads = 128;
constexpr int dims_per_thread = static_cast<int>(max_head_dim / attention_threads);

__device__ __forceinline__ float f16(std::uint16_t bits) { return __half2float(__ushort_as_half(bits)); }

__global__ void __launch_bounds__(attention_threads) attention_kernel(attention_args a) {
  __shared__ float q[max_head_dim];         // this head's query, scaled
  __shared__ float scores[attention_chunk];  // then the chunk's probabilities
  __shared__ float scratch[32];
  const std::int64_t split = blockIdx.x, h = blockIdx.y, t = blockIdx.z;
  const std::int64_t hd = a.p.head_dim;
  const std::int64_t n = a.map.positions[t] + 1;
  const std::int64_t first = a.window > 0 && n > a.window ? n - a.window : 0;  // the window's first key
  const std::int64_t begin = max(first, split * a.split_keys);
  const std::int64_t end = min(n, split * a.split_keys + a.split_keys);
  const std::int64_t column = (h / (a.p.n_head / a.p.n_head_kv)) * hd;
  const std::int32_t* table = a.map.pages + a.map.tables[t];
  const std::int64_t pt = a.layout.page_tokens;
  const std::int64_t item = (t * a.p.n_head + h) * a.n_splits + split;
  const int warp = static_cast<int>(threadIdx.x / 32), lane = static_cast<int>(threadIdx.x % 32);
  constexpr int warps = attention_threads / 32;

  if (begin >= end) {  // a part past this sequence's end or before its window: no keys
    if (threadIdx.x == 0) {
      float* part = a.partial + item * (hd + 2);
      part[hd] = -INFINITY;
      part[hd + 1] = 0.0f;
    }
    return;
  }
  for (std::int64_t i = threadIdx.x; i < hd; i += attention_threads) q[i] = a.q[(t * a.p.n_head + h) * hd + i] * a.scale;
  __syncthreads();

  float running_max = -INFINITY, running_sum = 0.0f;
  float acc[dims_per_thread] = {};
  for (std::int64_t c0 = begin; c0 < end; c0 += attention_chunk) {
    const std::int64_t c1 = min(end, c0 + attention_chunk);
    for (std::int64_t j = c0 + warp; j < c1; j += warps) {
      const std::uint16_t* k = a.k_cache + a.layout.offset(a.layer, table[j / pt], j % pt) + column;  // [hd]
      float dot = 0.0f;
      for (std::int64_t i = lane; i < hd; i += 32) dot += q[i] * f16(k[i]);
      for (int offset = 16; offset > 0; offset /= 2) dot += __shfl_xor_sync(0xffffffffu, dot, offset);
      if (a.softcap > 0.0f) dot = a.softcap * tanhf(dot / a.softcap);
      if (lane == 0) scores[j - c0] = dot;
    }
    __syncthreads();
    float local_max = -INFINITY;
    for (std::int64_t j = threadIdx.x; j < c1 - c0; j += attention_threads) local_max = fmaxf(local_max, scores[j]);
    const float new_max = fmaxf(running_max, block_max(local_max, scratch));
    float local_sum = 0.0f;
    for (std::int64_t j = threadIdx.x; j < c1 - c0; j += attention_threads) {
      const float e = __expf(scores[j] - new_max);
      scores[j] = e;
      local_sum += e;
    }
    const float chunk_sum = block_sum(local_sum, scratch);  // its barriers also publish scores
    const float factor = __expf(running_max - new_max);
    running_sum = running_sum * factor + chunk_sum;
    running_max = new_max;
#pragma unroll
    for (int d = 0; d < dims_per_thread; ++d) {
      const std::int64_t i = threadIdx.x + d * attention_threads;
      if (i >= hd) continue;
      float sum = acc[d] * factor;
      for (std::int64_t j = c0; j < c1; ++j) {
        sum += scores[j - c0] * f16(a.v_cache[a.layout.offset(a.layer, table[j / pt], j % pt) + column + i]);
      }
      acc[d] = sum;
    }
    __syncthreads();  // scores is rewritten by the next chunk
  }

  if (a.n_splits == 1) {
    float* o = a.out + (t * a.p.n_head + h) * hd;  // [hd]
    for (int d = 0; d < dims_per_thread; ++d) {
      const std::int64_t i = threadIdx.x + d * attention_threads;
      if (i < hd) o[i] = acc[d] / running_sum;
    }
    return;
  }
  float* part = a.partial + item * (hd + 2);  // [hd unnormalized sums, max, sum]
  for (int d = 0; d < dims_per_thread; ++d) {
    const std::int64_t i = threadIdx.x + d * attention_threads;
    if (i < hd) part[i] = acc[d];
  }
  if (threadIdx.x == 0) {
    part[hd] = running_max;
    part[hd + 1] = running_sum;
  }
}

__global__ void attention_merge_kernel(attention_args a) {
  const std::int64_t h = blockIdx.x, t = blockIdx.y;
  const std::int64_t hd = a.p.head_dim;
  const float* parts = a.partial + (t * a.p.n_head + h) * a.n_splits * (hd + 2);  // [n_splits × (hd + 2)]
  float max = -INFINITY;
  for (std::int64_t s = 0; s < a.n_splits; ++s) max = fmaxf(max, parts[s * (hd + 2) + hd]);
  float total = 0.0f;
  for (std::int64_t s = 0; s < a.n_splits; ++s) {
    const float* part = parts + s * (hd + 2);
    if (part[hd + 1] > 0.0f) total += part[hd + 1] * __expf(part[hd] - max);
  }
  for (std::int64_t i = threadIdx.x; i < hd; i += blockDim.x) {
    float sum = 0.0f;
    for (std::int64_t s = 0; s < a.n_splits; ++s) {
      const float* part = parts + s * (hd + 2);
      if (part[hd + 1] > 0.0f) sum += part[i] * __expf(part[hd] - max);
    }
    a.out[(t * a.p.n_head + h) * hd + i] = sum / total;
  }
}

}  // namespace

status launch_attention(const attention_args& a, cudaStream_t stream) {
  if (a.p.head_dim > max_head_dim) {
    return error(errc::invalid_argument, "head_dim " + std::to_string(a.p.head_dim) + " exceeds the CUDA attention's " +
                                             std::to_string(max_head_dim));
  }
  const dim3 grid(static_cast<unsigned>(a.n_splits), static_cast<unsigned>(a.p.n_head), static_cast<unsigned>(a.n_tokens));
  attention_kernel<<<grid, attention_threads, 0, stream>>>(a);
  CHATAI_CUDA_CHECK_LAUNCH();
  if (a.n_splits > 1) {
    attention_merge_kernel<<<dim3(static_cast<unsigned>(a.p.n_head), static_cast<unsigned>(a.n_tokens)), 128, 0, stream>>>(a);
    CHATAI_CUDA_CHECK_LAUNCH();
  }
  return {};
}

}  // namespace chatai::engine::cuda
