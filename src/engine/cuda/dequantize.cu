// BF16 conversions for the GEMMs: eight threads per 32-element chunk of a weight row, one per
// activation.
#include "check.hpp"
#include "dequantize.cuh"
#include "quant_device.cuh"

namespace chatai::engine::cuda {
namespace {

__device__ __forceinline__ std::uint32_t bf16_bits(float f) { return __bfloat16_as_ushort(__float2bfloat16_rn(f)); }

// Thread i takes elements [4 q, 4 q + 4), q = i % 8, of chunk i / 8 of the matrix (row by
// row): a warp reads neighbouring weight bytes and writes 256 neighbouring bytes.
template <ggml_type T>
__global__ void dequantize_kernel(const std::byte* w, std::size_t row_bytes, std::int64_t rows, std::int64_t cols,
                                  std::uint16_t* out) {
  const std::int64_t chunks = cols / 32;
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows * chunks * lanes_per_chunk) return;
  const std::int64_t chunk = i / lanes_per_chunk;
  const int q = static_cast<int>(i % lanes_per_chunk);
  const std::int64_t r = chunk / chunks, c = chunk % chunks;
  float v[4];
  dequantize4<T>(w + static_cast<std::size_t>(r) * row_bytes, c, q, v);
  reinterpret_cast<uint2*>(out + r * cols + c * 32)[q] =  // [8 × 4 bf16]
      make_uint2(bf16_bits(v[0]) | (bf16_bits(v[1]) << 16), bf16_bits(v[2]) | (bf16_bits(v[3]) << 16));
}

template <ggml_type T>
status launch(const std::byte* w, std::size_t row_bytes, std::int64_t rows, std::int64_t cols, std::uint16_t* out,
              cudaStream_t stream) {
  constexpr unsigned threads = 256;
  const std::int64_t items = rows * (cols / 32) * lanes_per_chunk;
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
