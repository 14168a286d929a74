// The CUDA kernels' dequantization, run on the host: every 32-element chunk of every weight
// type against the CPU backend's scalar reference, bit for bit. Needs the CUDA headers,
// not a GPU.
#include <doctest/doctest.h>

#include <cstring>
#include <random>
#include <vector>

#include "../../src/engine/cpu/quant_reference.hpp"
#include "../../src/engine/cuda/quant_device.cuh"

using namespace chatai::engine;

namespace {

template <ggml_type T>
void check_type(std::mt19937& rng) {
  CAPTURE(to_string(T));
  const std::int64_t rows = 3, cols = 768;  // three K-quant super-blocks per row
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> values(static_cast<std::size_t>(rows * cols));
  for (float& x : values) x = dist(rng);
  const auto& info = type_info(T);
  const std::size_t row_bytes = static_cast<std::size_t>(cols / info.block_size) * info.type_size;
  // 16-byte aligned, as the device allocations are.
  std::vector<float4> storage((rows * row_bytes + sizeof(float4) - 1) / sizeof(float4));
  auto* bytes = reinterpret_cast<std::byte*>(storage.data());
  cpu::quantize_row(T, values.data(), bytes, rows * cols);
  std::vector<float> want(values.size());
  cpu::dequantize_row(T, bytes, want.data(), rows * cols);
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t c = 0; c < cols / 32; ++c) {
      float v[32];
      cuda::dequantize32<T>(bytes + r * row_bytes, c, v);
      CAPTURE(r);
      CAPTURE(c);
      REQUIRE(std::memcmp(v, want.data() + r * cols + c * 32, sizeof v) == 0);
    }
  }
}

}  // namespace

TEST_CASE("the kernels' dequantization equals the scalar reference for every type") {
  std::mt19937 rng(21);
  check_type<ggml_type::f32>(rng);
  check_type<ggml_type::f16>(rng);
  check_type<ggml_type::bf16>(rng);
  check_type<ggml_type::q8_0>(rng);
  check_type<ggml_type::q4_0>(rng);
  check_type<ggml_type::q4_1>(rng);
  check_type<ggml_type::q5_0>(rng);
  check_type<ggml_type::q5_1>(rng);
  check_type<ggml_type::q2_k>(rng);
  check_type<ggml_type::q3_k>(rng);
  check_type<ggml_type::q4_k>(rng);
  check_type<ggml_type::q5_k>(rng);
  check_type<ggml_type::q6_k>(rng);
}
