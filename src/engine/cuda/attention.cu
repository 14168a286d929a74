// Split attention over the paged KV cache: one block per (part, head, token) with an online
// softmax over chunks of attention_chunk keys, then one block per (head, token) to merge.
#include <cuda_fp16.h>

#include "attention.cuh"
#include "block_reduce.cuh"
#include "check.hpp"

namespace chatai::engine::cuda {
namespace {

constexpr int attention_threads = 128;
constexpr int attention_warps = attention_threads / 32;
constexpr int lanes_per_key = 8;                      // a key's dot product: 8 lanes, pairs of dimensions each
constexpr int keys_per_warp = 32 / lanes_per_key;     // keys a warp scores at once
static_assert(max_head_dim / 2 <= attention_threads);  // every pair of dimensions has a thread for the values

// One block per (part, head, token). Keys are scored four per warp; each value dimension pair
// is summed over the chunk's keys in `slices` interleaved parts by as many threads, merged at
// the end, so that every thread loads values whatever the head size.
__global__ void __launch_bounds__(attention_threads) attention_kernel(attention_args a) {
  __shared__ float q[max_head_dim];                 // this head's query, scaled
  __shared__ float scores[attention_chunk];         // then the chunk's probabilities
  __shared__ std::int64_t rows[attention_chunk];    // each key's offset(layer, page, slot) in the pools
  __shared__ float sums[2 * attention_threads];     // [slices × head_dim]: each slice's value sums
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
  const int pairs = static_cast<int>(hd / 2);
  const int slices = attention_threads / pairs;
  const int slice = static_cast<int>(threadIdx.x) / pairs, pair = static_cast<int>(threadIdx.x) % pairs;

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
  float2 acc = {0.0f, 0.0f};  // dimensions 2 pair and 2 pair + 1, over this slice's keys
  for (std::int64_t c0 = begin; c0 < end; c0 += attention_chunk) {
    const std::int64_t c1 = min(end, c0 + attention_chunk);
    const int sub = lane % lanes_per_key;
    for (std::int64_t j0 = c0 + warp * keys_per_warp; j0 < c1; j0 += attention_warps * keys_per_warp) {
      const std::int64_t j = j0 + lane / lanes_per_key;
      float dot = 0.0f;
      std::int64_t row = 0;
      if (j < c1) {
        row = a.layout.offset(a.layer, table[j / pt], j % pt);
        const auto* k = reinterpret_cast<const __half2*>(a.k_cache + row + column);  // [pairs]
        for (int i = sub; i < pairs; i += lanes_per_key) {
          const float2 kf = __half22float2(k[i]);
          dot += q[2 * i] * kf.x + q[2 * i + 1] * kf.y;
        }
      }
      for (int offset = lanes_per_key / 2; offset > 0; offset /= 2) dot += __shfl_xor_sync(0xffffffffu, dot, offset);
      if (j < c1 && sub == 0) {
        scores[j - c0] = a.softcap > 0.0f ? a.softcap * tanhf(dot / a.softcap) : dot;
        rows[j - c0] = row;
      }
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
    acc.x *= factor;
    acc.y *= factor;
    if (slice < slices) {
      const std::uint16_t* v = a.v_cache + column + 2 * pair;
#pragma unroll 4
      for (int j = slice; j < c1 - c0; j += slices) {
        const float2 vf = __half22float2(*reinterpret_cast<const __half2*>(v + rows[j]));
        acc.x += scores[j] * vf.x;
        acc.y += scores[j] * vf.y;
      }
    }
    __syncthreads();  // scores and rows are rewritten by the next chunk
  }

  // Thread (slice, pair) holds its slice's sums at [slice × hd + 2 pair]; threads past the
  // last slice hold zeros, where no one reads.
  sums[2 * threadIdx.x] = acc.x;
  sums[2 * threadIdx.x + 1] = acc.y;
  __syncthreads();
  float* part = a.partial + item * (hd + 2);  // [hd unnormalized sums, max, sum]
  float* o = a.out + (t * a.p.n_head + h) * hd;  // [hd]
  for (std::int64_t i = threadIdx.x; i < hd; i += attention_threads) {
    float total = 0.0f;
    for (int s = 0; s < slices; ++s) total += sums[s * hd + i];
    if (a.n_splits == 1) {
      o[i] = total / running_sum;
    } else {
      part[i] = total;
    }
  }
  if (a.n_splits > 1 && threadIdx.x == 0) {
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
  if (a.p.head_dim > max_head_dim || a.p.head_dim % 2 != 0) {
    return error(errc::invalid_argument, "head_dim " + std::to_string(a.p.head_dim) +
                                             " is odd or exceeds the CUDA attention's " + std::to_string(max_head_dim));
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
