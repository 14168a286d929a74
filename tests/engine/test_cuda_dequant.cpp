// The CUDA kernels' dequantization, run on the host: every 32-element chunk and every
// 4-element quarter-lane piece of every weight type against the CPU backend's scalar
// reference, bit for bit; and the matrix-vector kernel's split of a row among a warp's lanes.
// Needs the CUDA headers, not a GPU.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "../../src/engine/cpu/quant_reference.hpp"
#include "../../src/engine/cuda/matvec_lane.cuh"

using namespace chatai::engine;

namespace {

// f.template operator()<T>() for every weight type of the CUDA kernels.
template <class F>
void for_each_weight_type(F&& f) {
  f.template operator()<ggml_type::f32>();
  f.template operator()<ggml_type::f16>();
  f.template operator()<ggml_type::bf16>();
  f.template operator()<ggml_type::q8_0>();
  f.template operator()<ggml_type::q4_0>();
  f.template operator()<ggml_type::q4_1>();
  f.template operator()<ggml_type::q5_0>();
  f.template operator()<ggml_type::q5_1>();
  f.template operator()<ggml_type::q2_k>();
  f.template operator()<ggml_type::q3_k>();
  f.template operator()<ggml_type::q4_k>();
  f.template operator()<ggml_type::q5_k>();
  f.template operator()<ggml_type::q6_k>();
}

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
      for (int q = 0; q < cuda::lanes_per_chunk; ++q) {
        float piece[4];
        cuda::dequantize4<T>(bytes + r * row_bytes, c, q, piece);
        CAPTURE(q);
        REQUIRE(std::memcmp(piece, want.data() + r * cols + c * 32 + 4 * q, sizeof piece) == 0);
      }
    }
  }
}

// The products of a warp on the host: the 32 lanes' parts of dot_lane added up, from the
// kernel of the width that takes n_tokens; [R × n_tokens].
template <ggml_type T, int N, int R>
std::vector<float> warp_products_of_width(const std::byte* const (&rows)[R], const std::vector<float>& x,
                                          std::int64_t cols, int n_tokens) {
  float total[R][N] = {};
  for (int lane = 0; lane < cuda::warp_lanes; ++lane) {
    float acc[R][N] = {};
    cuda::dot_lane<T, N, R>(rows, x.data(), cols, n_tokens, lane, acc);
    for (int r = 0; r < R; ++r) {
      for (int t = 0; t < N; ++t) total[r][t] += acc[r][t];
    }
  }
  std::vector<float> out;
  for (int r = 0; r < R; ++r) {
    for (int t = n_tokens; t < N; ++t) REQUIRE(total[r][t] == 0.0f);  // tokens past n untouched
    out.insert(out.end(), total[r], total[r] + n_tokens);
  }
  return out;
}

template <ggml_type T, int R>
std::vector<float> warp_products(const std::byte* const (&rows)[R], const std::vector<float>& x, std::int64_t cols,
                                 int n_tokens) {
  return cuda::with_matvec_width(
      n_tokens, [&]<int N>() { return warp_products_of_width<T, N, R>(rows, x, cols, n_tokens); });
}

// 16-byte aligned storage, as the device allocations are.
std::vector<float4> aligned_floats(const std::vector<float>& values) {
  std::vector<float4> storage((values.size() + 3) / 4);
  std::memcpy(storage.data(), values.data(), values.size() * sizeof(float));
  return storage;
}

template <ggml_type T>
void check_split(std::mt19937& rng, std::int64_t cols) {
  CAPTURE(to_string(T));
  CAPTURE(cols);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> values(static_cast<std::size_t>(2 * cols));
  for (float& v : values) v = dist(rng);
  const auto& info = type_info(T);
  const std::size_t row_bytes = static_cast<std::size_t>(cols / info.block_size) * info.type_size;
  std::vector<float4> storage((2 * row_bytes + 15) / 16);
  auto* bytes = reinterpret_cast<std::byte*>(storage.data());
  cpu::quantize_row(T, values.data(), bytes, 2 * cols);
  std::vector<float> w(values.size());  // [2 × cols]
  cpu::dequantize_row(T, bytes, w.data(), 2 * cols);
  const std::byte* one[1] = {bytes};
  const std::byte* two[2] = {bytes, bytes + row_bytes};
  for (int n = 1; n <= cuda::max_matvec_tokens; ++n) {
    CAPTURE(n);
    std::vector<float> x(static_cast<std::size_t>(n * cols));
    for (float& v : x) v = dist(rng);
    const auto alone = warp_products<T, 1>(one, x, cols, n);  // [n]
    const auto pair = warp_products<T, 2>(two, x, cols, n);   // [2 × n]
    for (int r = 0; r < 2; ++r) {
      for (int t = 0; t < n; ++t) {
        double want = 0, magnitude = 0;
        for (std::int64_t e = 0; e < cols; ++e) {
          const double product = double(w[static_cast<std::size_t>(r * cols + e)]) * x[static_cast<std::size_t>(t * cols + e)];
          want += product;
          magnitude += std::abs(product);
        }
        CAPTURE(r);
        CAPTURE(t);
        CHECK(std::abs(pair[static_cast<std::size_t>(r * n + t)] - want) < 1e-5 * magnitude);
        if (r == 0) CHECK(std::abs(alone[static_cast<std::size_t>(t)] - want) < 1e-5 * magnitude);
      }
    }
  }
}

}  // namespace

TEST_CASE("a warp's lanes take every element of a row exactly once") {
  // Weights of one and whole-number activations: every sum is exact in any order, so one
  // element missed or taken twice changes the product.
  for (std::int64_t cols : {32, 256, 576, 768, 1024, 1056, 2304, 4096 + 32}) {
    CAPTURE(cols);
    const std::vector<float4> ones = aligned_floats(std::vector<float>(static_cast<std::size_t>(cols), 1.0f));
    std::vector<float> x(static_cast<std::size_t>(cuda::max_matvec_tokens * cols));
    for (std::size_t e = 0; e < x.size(); ++e) x[e] = static_cast<float>((e * e + 7 * e) % 1013 + 1);
    for (int n = 1; n <= cuda::max_matvec_tokens; ++n) {
      const std::byte* row[1] = {reinterpret_cast<const std::byte*>(ones.data())};
      const auto got = warp_products<ggml_type::f32, 1>(row, x, cols, n);
      for (std::int64_t t = 0; t < n; ++t) {
        double want = 0;
        for (std::int64_t e = 0; e < cols; ++e) want += x[static_cast<std::size_t>(t * cols + e)];
        CAPTURE(n);
        CAPTURE(t);
        CHECK(got[static_cast<std::size_t>(t)] == want);
      }
    }
  }
}

TEST_CASE("a warp's products of one row and of two rows together equal the dequantized rows' for every type") {
  std::mt19937 rng(5);
  for (std::int64_t cols : {768, 2304}) {  // a partial step; two whole steps and a partial one
    for_each_weight_type([&]<ggml_type T>() { check_split<T>(rng, cols); });
  }
}

TEST_CASE("the kernels' dequantization equals the scalar reference for every type") {
  std::mt19937 rng(21);
  for_each_weight_type([&]<ggml_type T>() { check_type<T>(rng); });
}
