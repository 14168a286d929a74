// Rotary embedding and the KV cache store: one block per token.
#include <cuda_fp16.h>

#include "check.hpp"
#include "rope.cuh"

namespace chatai::engine::cuda {
namespace {

__global__ void rope_store_kernel(rope_params p, float* q, float* k, const float* v, const float* bq, const float* bk,
                                  const float* bv, const double* inv_freq, step_map map, kv_layout layout,
                                  std::int64_t layer, std::uint16_t* k_cache, std::uint16_t* v_cache) {
  const std::int64_t t = blockIdx.x;
  const std::int64_t q_dim = p.n_head * p.head_dim, kv_dim = p.n_head_kv * p.head_dim, half = p.rope_dim / 2;
  float* qt = q + t * q_dim;   // [q_dim]
  float* kt = k + t * kv_dim;  // [kv_dim]
  if (bq) {
    for (std::int64_t i = threadIdx.x; i < q_dim; i += blockDim.x) qt[i] += bq[i];
  }
  if (bk) {
    for (std::int64_t i = threadIdx.x; i < kv_dim; i += blockDim.x) kt[i] += bk[i];
  }
  __syncthreads();
  const std::int64_t position = map.positions[t];
  const std::int64_t pairs = (p.n_head + p.n_head_kv) * half;
  for (std::int64_t item = threadIdx.x; item < pairs; item += blockDim.x) {
    const std::int64_t head = item / half, i = item % half;
    float* x = head < p.n_head ? qt + head * p.head_dim : kt + (head - p.n_head) * p.head_dim;  // [head_dim]
    const std::int64_t a = p.neox ? i : 2 * i;
    const std::int64_t b = p.neox ? i + half : 2 * i + 1;
    double s, c;
    sincos(static_cast<double>(position) * inv_freq[i], &s, &c);
    const float xa = x[a], xb = x[b];
    x[a] = xa * static_cast<float>(c) - xb * static_cast<float>(s);
    x[b] = xa * static_cast<float>(s) + xb * static_cast<float>(c);
  }
  __syncthreads();
  const std::int64_t page = map.pages[map.tables[t] + position / layout.page_tokens];
  const std::int64_t at = layout.offset(layer, page, position % layout.page_tokens);
  for (std::int64_t i = threadIdx.x; i < kv_dim; i += blockDim.x) {
    k_cache[at + i] = __half_as_ushort(__float2half_rn(kt[i]));
    v_cache[at + i] = __half_as_ushort(__float2half_rn(v[t * kv_dim + i] + (bv ? bv[i] : 0.0f)));
  }
}

}  // namespace

status launch_rope_store(const rope_params& p, float* q, float* k, const float* v, const float* bq, const float* bk,
                         const float* bv, const double* inv_freq, std::int64_t n_tokens, const step_map& map,
                         const kv_layout& layout, std::int64_t layer, std::uint16_t* k_cache, std::uint16_t* v_cache,
                         cudaStream_t stream) {
  rope_store_kernel<<<static_cast<unsigned>(n_tokens), 128, 0, stream>>>(p, q, k, v, bq, bk, bv, inv_freq, map, layout,
                                                                          layer, k_cache, v_cache);
  CHATAI_CUDA_CHECK_LAUNCH();
  return {};
}

}  // namespace chatai::engine::cuda
