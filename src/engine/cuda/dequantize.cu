// BF16 conversions for the GEMMs: one thread per 32-element chunk of a weight row, one per
// activation.
#include "check.hpp"
#include "dequantize.cuh"
#include "quant_device.cuh"

namespace chatai::engine::cuda {
namespace {

__device__ __forceinline__ std::uint32_t bf16_bits(float f) { return __bfloat16_as_ushort(__float2bfloat16_rn(f)); }

template <ggml_type T>
__global__ void dequantize_kernel(const std::byte* w, std::size_t row_bytes, std::int64_t rows, std::int64_t cols,
                                  std::uint16_t* out) {
  const std::int64_t chunks = cols / 32;
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows * chunks) return;
  const std::int64_t r = i / chunks, c = i % chunks;
  float v[32];
  dequantize32<T>(w + static_cast<std::size_t>(r) * row_bytes, c, v);
  uint4* o = reinterpret_cast<uint4*>(out + r * cols + c * 32);  // [4 × 8 bf16]
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const float* s = v + 8 * k;
    o[k] = make_uint4(bf16_bits(s[0]) | (bf16_bits(s[1]) << 16), bf16_bits(s[2]) | (bf16_bits(s[3]) << 16),
                      bf16_bits(s[4]) | (bf16_bits(s[5]) << 16), bf16_bits(s[6]) | (bf16_bits(s[7]) << 16));
  }
}

template <ggml_type T>
status launch(const std::byte* w, std::size_t row_bytes, std::int64_t rows, std::int64_t cols, std::uint16_t* out,
              cudaStream_t stream) {
  constexpr unsigned threads = 256;
  const std::int64_t items = rows * (cols / 32);
  dequantize_kernel<T><<<static_cast<unsigned>((items + threads - 1) / threads), threads, 0, stream>>>(w, row_bytes, rows,
                                                                                                    cols, out);
  CHATAI_CUDA_CHECK_LAUNCH();
  return {};
}

__global__ void to_bf16_kernel(const float* x, std::int64_t n, std::uint16_t* out) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = static_cast<std::uint16_t>(bf16_bits(x[i]));
}

}  // namespace

status launch_dequantize_bf16(ggml_type type, const std::byte* w, std::size_t row_bytes, std::int64_t rows,
                              std::int64_t cols, std::uint16_t* out, cudaStream_t stream) {
  switch (type) {
    case ggml_type::f32: return launch<ggml_type::f32>(w, row_bytes, rows, cols, out, stream);
    case ggml_type::f16: return launch<ggml_type::f16>(w, row_bytes, rows, cols, out, stream);
    case ggml_type::bf16: return launch<ggml_type::bf16>(w, row_bytes, rows, cols, out, stream);
    case ggml_type::q8_0: return launch<ggml_type::q8_0>(w, row_bytes, rows, cols, out, stream);
    case ggml_type::q4_0: return launch<ggml_type::q4_0>(w, row_bytes, rows, cols, out, stream);
    case ggml_type::q4_1: return launch<ggml_type::q4_1>(w, row_bytes, rows, cols, out, stream);
    case ggml_type::q5_0: return launch<ggml_type::q5_0>(w, row_bytes, rows, cols, out, stream);
    case ggml_type::q5_1: return launch<ggml_type::q5_1>(w, row_bytes, rows, cols, out, stream);
    case ggml_type::q2_k: return launch<ggml_type::q2_k>(w, row_bytes, rows, cols, out, stream);
    case ggml_type::q3_k: return launch<ggml_type::q3_k>(w, row_bytes, rows, cols, out, stream);
    case ggml_type::q4_k: return launch<ggml_type::q4_k>(w, row_bytes, rows, cols, out, stream);
    case ggml_type::q5_k: return launch<ggml_type::q5_k>(w, row_bytes, rows, cols, out, stream);
    case ggml_type::q6_k: return launch<ggml_type::q6_k>(w, row_bytes, rows, cols, out, stream);
    default: return error(errc::unsupported, "no CUDA dequantization kernel for " + std::string(to_string(type)));
  }
}

status launch_to_bf16(const float* x, std::int64_t n, std::uint16_t* out, cudaStream_t stream) {
  constexpr unsigned threads = 256;
  to_bf16_kernel<<<static_cast<unsigned>((n + threads - 1) / threads), threads, 0, stream>>>(x, n, out);
  CHATAI_CUDA_CHECK_LAUNCH();
  return {};
}

}  // namespace chatai::engine::cuda
