// The CUDA backend's host-side logic, which runs without a GPU: the KV cache's page
// allocator, the plan of kernels and sizes, and the kernels' CPU references against the CPU
// backend's scalar references and kernels.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "../../src/engine/cpu/kernels.hpp"
#include "../../src/engine/cpu/quant_blocks.hpp"
#include "../../src/engine/cpu/quant_reference.hpp"
#include "../../src/engine/cuda/kv_pages.hpp"
#include "../../src/engine/cuda/plan.hpp"
#include "../../src/engine/cuda/reference.hpp"

using namespace chatai::engine;
using namespace chatai::engine::cuda;

namespace {

const ggml_type all_weight_types[] = {ggml_type::f32,  ggml_type::f16,  ggml_type::bf16, ggml_type::q8_0,
                                      ggml_type::q4_0, ggml_type::q4_1, ggml_type::q5_0, ggml_type::q5_1,
                                      ggml_type::q2_k, ggml_type::q3_k, ggml_type::q4_k, ggml_type::q5_k,
                                      ggml_type::q6_k};

std::vector<float> random_values(std::mt19937& rng, std::int64_t n, float scale) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(static_cast<std::size_t>(n));
  for (float& x : v) x = dist(rng);
  return v;
}

std::vector<std::byte> quantized(ggml_type type, const std::vector<float>& values) {
  const auto& info = type_info(type);
  std::vector<std::byte> out(values.size() / static_cast<std::size_t>(info.block_size) * info.type_size);
  cpu::quantize_row(type, values.data(), out.data(), static_cast<std::int64_t>(values.size()));
  return out;
}

}  // namespace

TEST_CASE("the KV page pool hands out pages as sequences grow and takes them back") {
  kv_page_pool pool(8, 16);
  CHECK(pool.free_pages() == 8);
  CHECK(pool.pages_for(0) == 0);
  CHECK(pool.pages_for(1) == 1);
  CHECK(pool.pages_for(16) == 1);
  CHECK(pool.pages_for(17) == 2);

  std::vector<std::int32_t> a, b;
  REQUIRE(pool.reserve(a, 20));
  CHECK(a == std::vector<std::int32_t>{0, 1});
  REQUIRE(pool.reserve(b, 33));
  CHECK(b == std::vector<std::int32_t>{2, 3, 4});
  CHECK(pool.free_pages() == 3);
  REQUIRE(pool.reserve(a, 32));  // already held
  CHECK(a.size() == 2);

  // Too many: nothing changes.
  std::vector<std::int32_t> c{};
  CHECK_FALSE(pool.reserve(c, 16 * 4));
  CHECK(c.empty());
  CHECK(pool.free_pages() == 3);

  pool.shrink(b, 16);  // keeps the page of positions 0..15
  CHECK(b == std::vector<std::int32_t>{2});
  CHECK(pool.free_pages() == 5);
  pool.release(a);
  CHECK(a.empty());
  CHECK(pool.free_pages() == 7);
  // The lowest free pages come first, so the pool stays compact.
  REQUIRE(pool.reserve(c, 48));
  CHECK(c == std::vector<std::int32_t>{0, 1, 3});
  pool.release(b);
  pool.release(c);
  CHECK(pool.free_pages() == 8);
}

TEST_CASE("a KV page in several page tables is free only when the last lets it go") {
  kv_page_pool pool(4, 16);
  std::vector<std::int32_t> a, b;
  REQUIRE(pool.reserve(a, 40));  // pages 0, 1, 2
  pool.share(a, 2, b);
  CHECK(b == std::vector<std::int32_t>{0, 1});
  CHECK(pool.shared(0));
  CHECK(pool.shared(1));
  CHECK_FALSE(pool.shared(2));
  CHECK(pool.free_pages() == 1);
  // b writes into page 1: it gets page 3 in its place, a keeps page 1.
  CHECK(pool.replace(b, 1) == 1);
  CHECK(b == std::vector<std::int32_t>{0, 3});
  CHECK_FALSE(pool.shared(1));
  CHECK(pool.free_pages() == 0);
  std::vector<std::int32_t> c;
  pool.share(b, 1, c);
  CHECK(pool.replace(c, 0) == -1);  // nothing free: nothing changes
  CHECK(c == std::vector<std::int32_t>{0});
  pool.release(a);
  CHECK(pool.free_pages() == 2);  // pages 1 and 2; page 0 is still b's and c's
  pool.release(b);
  CHECK(pool.free_pages() == 3);
  pool.release(c);
  CHECK(pool.free_pages() == 4);
}

TEST_CASE("the plan picks matrix-vector kernels for decode and GEMMs for larger steps") {
  for (ggml_type t : all_weight_types) {
    CAPTURE(to_string(t));
    CHECK(is_cuda_weight_type(t));
    for (std::int64_t n = 1; n <= max_matvec_tokens; ++n) CHECK(plan_matmul(t, n) == matmul_kernel::matvec);
    CHECK(plan_matmul(t, max_matvec_tokens + 1) ==
          (t == ggml_type::bf16 ? matmul_kernel::gemm_bf16 : matmul_kernel::gemm_dequantized));
    CHECK(plan_matmul(t, 512) != matmul_kernel::matvec);
  }
  CHECK_FALSE(is_cuda_weight_type(ggml_type::q8_1));
  CHECK_FALSE(is_cuda_weight_type(ggml_type::iq2_xs));

  CHECK(attention_splits(1) == 1);
  CHECK(attention_splits(256) == 1);
  CHECK(attention_splits(257) == 2);
  CHECK(attention_splits(4096) == 16);
  CHECK(graph_attention_splits(257) == 2);
  CHECK(graph_attention_splits(769) == 4);
  CHECK(graph_attention_splits(1025) == 8);
  CHECK(use_graph(1));
  CHECK(use_graph(8));
  CHECK_FALSE(use_graph(9));
  CHECK_FALSE(use_graph(0));

  CHECK(dequantize_tile_rows(4096, 14336, 16 << 20) == 1170);
  CHECK(dequantize_tile_rows(10, 100, 1 << 20) == 10);
  CHECK(dequantize_tile_rows(10, 100, 50) == 1);  // always at least one row

  CHECK(kv_cache_pages(0, 1000, 10) == 90);
  CHECK(kv_cache_pages(500, 1000, 10) == 50);
  CHECK(kv_cache_pages(0, -5, 10) == 0);
}

TEST_CASE("the matrix reference agrees with the CPU backend's portable kernels") {
  std::mt19937 rng(7);
  const std::int64_t rows = 5, cols = 512, n_tokens = 3;
  const auto x = random_values(rng, n_tokens * cols, 1.0f);  // [n_tokens × cols]
  const auto& kernels = cpu::portable_kernels();
  for (ggml_type t : all_weight_types) {
    CAPTURE(to_string(t));
    const auto w = quantized(t, random_values(rng, rows * cols, 0.05f));  // [rows × cols]
    std::vector<float> want(static_cast<std::size_t>(n_tokens * rows)), got(want.size());
    const cpu::weight_kernel k = kernels.for_type(t);
    std::vector<std::byte> xq(static_cast<std::size_t>(n_tokens) * cpu::q8_row_layout::bytes(cols));
    for (std::int64_t i = 0; i < n_tokens; ++i) {
      cpu::quantize_q8_row_reference(x.data() + i * cols, xq.data() + i * cpu::q8_row_layout::bytes(cols), cols);
    }
    const bool q8 = k.activations == cpu::activation_kind::q8;
    const std::size_t row_bytes = w.size() / rows;
    for (std::int64_t r = 0; r < rows; ++r) {
      k.dot(cols, w.data() + r * row_bytes, q8 ? xq.data() : reinterpret_cast<const std::byte*>(x.data()),
            q8 ? cpu::q8_row_layout::bytes(cols) : cols * sizeof(float), static_cast<int>(n_tokens), want.data() + r,
            static_cast<std::size_t>(rows));
    }
    reference_matmul(t, w.data(), rows, cols, x.data(), n_tokens, got.data(), rows);
    double diff = 0, norm = 0;
    for (std::size_t i = 0; i < got.size(); ++i) {
      diff += (got[i] - want[i]) * (got[i] - want[i]);
      norm += want[i] * want[i];
    }
    // The CPU kernels round activations to 8 bits for the quantized types.
    CHECK(std::sqrt(diff / norm) < (q8 ? 2e-2 : 1e-5));
  }
}

TEST_CASE("the embedding and BF16 references expand rows as the scalar reference does") {
  std::mt19937 rng(11);
  const std::int64_t rows = 6, cols = 256;
  for (ggml_type t : all_weight_types) {
    CAPTURE(to_string(t));
    const auto w = quantized(t, random_values(rng, rows * cols, 1.0f));
    std::vector<float> full(static_cast<std::size_t>(rows * cols));
    cpu::dequantize_row(t, w.data(), full.data(), rows * cols);
    const std::int32_t tokens[] = {4, 0, 4};
    std::vector<float> embedded(3 * cols);
    reference_embedding(t, w.data(), cols, tokens, 3, embedded.data());
    for (std::int64_t i = 0; i < 3; ++i) {
      CHECK(std::equal(embedded.begin() + i * cols, embedded.begin() + (i + 1) * cols, full.begin() + tokens[i] * cols));
    }
    std::vector<std::uint16_t> bf16(full.size());
    reference_dequantize_bf16(t, w.data(), rows, cols, bf16.data());
    for (std::size_t i = 0; i < full.size(); ++i) {
      REQUIRE(std::fabs(cpu::bf16_to_f32(bf16[i]) - full[i]) <= std::fabs(full[i]) / 256.0f);
    }
  }
}

TEST_CASE("the norm, SwiGLU and rotary references compute the formulas") {
  std::mt19937 rng(3);
  const std::int64_t n = 64;
  auto x = random_values(rng, 3 * n, 2.0f);  // [3 × n]
  const auto add = random_values(rng, 3 * n, 1.0f);
  const auto weight = random_values(rng, n, 1.0f);
  const auto before = x;
  const std::int32_t rows[] = {2, 0};
  std::vector<float> h(2 * n, NAN);
  reference_add_rmsnorm(x.data(), add.data(), weight.data(), 1e-5f, 2, n, rows, h.data());
  for (int t = 0; t < 2; ++t) {
    double sum = 0;
    for (std::int64_t i = 0; i < n; ++i) {
      const float v = before[rows[t] * n + i] + add[rows[t] * n + i];
      CHECK(x[rows[t] * n + i] == v);
      sum += double(v) * v;
    }
    const double scale = 1.0 / std::sqrt(sum / n + 1e-5);
    for (std::int64_t i = 0; i < n; ++i) {
      CHECK(h[t * n + i] == doctest::Approx(x[rows[t] * n + i] * scale * weight[i]).epsilon(1e-5));
    }
  }
  for (std::int64_t i = 0; i < n; ++i) CHECK(x[n + i] == before[n + i]);  // row 1 was not asked for

  auto gate = random_values(rng, n, 2.0f);
  const auto up = random_values(rng, n, 1.0f);
  const auto g0 = gate;
  reference_swiglu(gate.data(), up.data(), n);
  for (std::int64_t i = 0; i < n; ++i) CHECK(gate[i] == doctest::Approx(g0[i] / (1 + std::exp(-g0[i])) * up[i]));
  auto gelu = g0;
  reference_geglu(gelu.data(), up.data(), n);
  for (std::int64_t i = 0; i < n; ++i) {
    const double g = g0[i], exact = 0.5 * g * (1 + std::erf(g / std::sqrt(2.0)));  // the tanh form is within 1e-3
    CHECK(gelu[i] == doctest::Approx(exact * up[i]).epsilon(1e-3).scale(1.0));
  }

  // Rotary embedding at position 0 is the identity; elsewhere it keeps each pair's length.
  rope_params p{2, 1, 8, 8, false};
  kv_layout layout{1, 2, 4, 8};
  std::vector<std::uint16_t> kc(static_cast<std::size_t>(layout.elements())), vc(kc.size());
  auto q = random_values(rng, 2 * 16, 1.0f), k = random_values(rng, 2 * 8, 1.0f), v = random_values(rng, 2 * 8, 1.0f);
  const auto q0 = q, k0 = k;
  std::vector<double> inv_freq{1.0, 0.1, 0.01, 0.001};
  const std::int32_t positions[] = {0, 5}, tables[] = {0, 0}, pages[] = {1, 0};
  const step_map map{positions, tables, pages};
  reference_rope_store(p, q.data(), k.data(), v.data(), nullptr, nullptr, nullptr, inv_freq.data(), 2, map, layout, 0,
                       kc.data(), vc.data());
  for (int i = 0; i < 16; ++i) CHECK(q[i] == q0[i]);
  for (int i = 16; i < 32; i += 2) {
    CHECK(std::hypot(q[i], q[i + 1]) == doctest::Approx(std::hypot(q0[i], q0[i + 1])).epsilon(1e-5));
  }
  // Position 0 lives in page 1 slot 0, position 5 in page 0 slot 1 (the table is {1, 0}).
  for (int i = 0; i < 8; ++i) {
    CHECK(cpu::f16_to_f32(kc[layout.offset(0, 1, 0) + i]) == doctest::Approx(k0[i]).epsilon(1e-3));
    CHECK(cpu::f16_to_f32(vc[layout.offset(0, 1, 0) + i]) == doctest::Approx(v[i]).epsilon(1e-3));
    CHECK(cpu::f16_to_f32(kc[layout.offset(0, 0, 1) + i]) == doctest::Approx(k[8 + i]).epsilon(1e-3));
  }
}

TEST_CASE("paged attention matches the CPU backend's attention over contiguous keys") {
  std::mt19937 rng(5);
  const rope_params p{4, 2, 32, 32, false};
  const std::int64_t kv_dim = p.n_head_kv * p.head_dim, length = 70;
  kv_layout layout{2, 8, 16, kv_dim};
  // The sequence's pages in a scrambled order.
  const std::int32_t pages[] = {6, 2, 7, 0, 4};
  std::vector<std::uint16_t> kc(static_cast<std::size_t>(layout.elements())), vc(kc.size());
  std::vector<float> keys(length * kv_dim), values(length * kv_dim);  // [length × kv_dim], f16-rounded
  for (std::int64_t j = 0; j < length; ++j) {
    for (std::int64_t i = 0; i < kv_dim; ++i) {
      const auto at = layout.offset(1, pages[j / 16], j % 16) + i;
      kc[at] = cpu::f32_to_f16(std::normal_distribution<float>()(rng));
      vc[at] = cpu::f32_to_f16(std::normal_distribution<float>()(rng));
      keys[j * kv_dim + i] = cpu::f16_to_f32(kc[at]);
      values[j * kv_dim + i] = cpu::f16_to_f32(vc[at]);
    }
  }
  const std::int32_t positions[] = {69, 17}, tables[] = {0, 0};
  const auto q = random_values(rng, 2 * p.n_head * p.head_dim, 1.0f);
  const float scale = 1.0f / std::sqrt(float(p.head_dim));
  // The keys by dimension, one page of `length` positions: [kv_dim × length].
  std::vector<float> key_columns(static_cast<std::size_t>(kv_dim * length));
  for (std::int64_t j = 0; j < length; ++j)
    for (std::int64_t c = 0; c < kv_dim; ++c) key_columns[c * length + j] = keys[j * kv_dim + c];
  // Whole sequences; sliding windows (Gemma's), one with a soft cap that bends these scores.
  for (const auto& [window, softcap] : {std::pair<std::int64_t, float>{0, 0.0f}, {10, 0.0f}, {25, 1.5f}}) {
    CAPTURE(window);
    CAPTURE(softcap);
    std::vector<float> got(q.size(), NAN);
    reference_attention(p, q.data(), kc.data(), vc.data(), 2, {positions, tables, pages}, layout, 1, scale, got.data(),
                        window, softcap);
    std::vector<float> want(p.head_dim), scores((length + 15) / 16 * 16);
    for (int t = 0; t < 2; ++t) {
      const std::int64_t n = positions[t] + 1, first = window > 0 && n > window ? n - window : 0;
      for (std::int64_t h = 0; h < p.n_head; ++h) {
        const std::int64_t g = h / (p.n_head / p.n_head_kv);
        const float* key_page = key_columns.data();
        const float* value_page = values.data() + g * p.head_dim;
        const cpu::kv_columns key_rows{&key_page, static_cast<std::size_t>(g * p.head_dim * length), length};
        const cpu::kv_rows value_rows{&value_page, 0, n, kv_dim};
        cpu::portable_kernels().attend(p.head_dim, q.data() + (t * p.n_head + h) * p.head_dim, key_rows, value_rows,
                                       first, n, scale, softcap, scores.data(), want.data());
        for (std::int64_t i = 0; i < p.head_dim; ++i) {
          CHECK(got[(t * p.n_head + h) * p.head_dim + i] == doctest::Approx(want[i]).epsilon(1e-4));
        }
      }
    }
  }
}
