// Token embedding: one thread per 32-element chunk of a token's row.
#include "check.hpp"
#include "embedding.cuh"
#include "quant_device.cuh"

namespace chatai::engine::cuda {
namespace {

template <ggml_type T>
__global__ void embedding_kernel(const std::byte* table, std::size_t row_bytes, std::int64_t cols,
                                 const std::int32_t* tokens, float* out) {
  const std::int64_t t = blockIdx.y;
  const std::int64_t c = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= cols / 32) return;
  float v[32];
  dequantize32<T>(table + static_cast<std::size_t>(tokens[t]) * row_bytes, c, v);
  float4* o = reinterpret_cast<float4*>(out + t * cols + c * 32);  // [8 × 4]
#pragma unroll
  for (int i = 0; i < 8; ++i) o[i] = make_float4(v[4 * i], v[4 * i + 1], v[4 * i + 2], v[4 * i + 3]);
}

template <ggml_type T>
status launch(const std::byte* table, std::size_t row_bytes, std::int64_t cols, const std::int32_t* tokens,
              std::int64_t n_tokens, float* out, cudaStream_t stream) {
  constexpr unsigned threads = 64;
  const dim3 grid(static_cast<unsigned>((cols / 32 + threads - 1) / threads), static_cast<unsigned>(n_tokens));
  embedding_kernel<T><<<grid, threads, 0, stream>>>(table, row_bytes, cols, tokens, out);
  CHATAI_CUDA_CHECK_LAUNCH();
  return {};
}

}  // namespace

status launch_embedding(ggml_type type, const std::byte* table, std::size_t row_bytes, std::int64_t cols,
                        const std::int32_t* tokens, std::int64_t n_tokens, float* out, cudaStream_t stream) {
  switch (type) {
    case ggml_type::f32: return launch<ggml_type::f32>(table, row_bytes, cols, tokens, n_tokens, out, stream);
    case ggml_type::f16: return launch<ggml_type::f16>(table, row_bytes, cols, tokens, n_tokens, out, stream);
    case ggml_type::bf16: return launch<ggml_type::bf16>(table, row_bytes, cols, tokens, n_tokens, out, stream);
    case ggml_type::q8_0: return launch<ggml_type::q8_0>(table, row_bytes, cols, tokens, n_tokens, out, stream);
    case ggml_type::q4_0: return launch<ggml_type::q4_0>(table, row_bytes, cols, tokens, n_tokens, out, stream);
    case ggml_type::q4_1: return launch<ggml_type::q4_1>(table, row_bytes, cols, tokens, n_tokens, out, stream);
    case ggml_type::q5_0: return launch<ggml_type::q5_0>(table, row_bytes, cols, tokens, n_tokens, out, stream);
    case ggml_type::q5_1: return launch<ggml_type::q5_1>(table, row_bytes, cols, tokens, n_tokens, out, stream);
    case ggml_type::q2_k: return launch<ggml_type::q2_k>(table, row_bytes, cols, tokens, n_tokens, out, stream);
    case ggml_type::q3_k: return launch<ggml_type::q3_k>(table, row_bytes, cols, tokens, n_tokens, out, stream);
    case ggml_type::q4_k: return launch<ggml_type::q4_k>(table, row_bytes, cols, tokens, n_tokens, out, stream);
    case ggml_type::q5_k: return launch<ggml_type::q5_k>(table, row_bytes, cols, tokens, n_tokens, out, stream);
    case ggml_type::q6_k: return launch<ggml_type::q6_k>(table, row_bytes, cols, tokens, n_tokens, out, stream);
    default: return error(errc::unsupported, "no CUDA embedding kernel for " + std::string(to_string(type)));
  }
}

}  // namespace chatai::engine::cuda
