// The CPU kernels: reference dequantization against the gguf package, and every dot-product
// kernel of every instruction set this machine supports against the scalar reference.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "../../src/engine/cpu/kernels.hpp"
#include "../../src/engine/cpu/quant_blocks.hpp"
#include "../../src/engine/cpu/quant_reference.hpp"
#include "chatai/core/json.hpp"

using namespace chatai::engine;
using namespace chatai::engine::cpu;

namespace {

const ggml_type all_weight_types[] = {ggml_type::f32,  ggml_type::f16,  ggml_type::bf16, ggml_type::q8_0,
                                      ggml_type::q4_0, ggml_type::q4_1, ggml_type::q5_0, ggml_type::q5_1,
                                      ggml_type::q2_k, ggml_type::q3_k, ggml_type::q4_k, ggml_type::q5_k,
                                      ggml_type::q6_k};

std::vector<std::byte> quantized(ggml_type type, const std::vector<float>& values) {
  const auto& info = type_info(type);
  const auto n = static_cast<std::int64_t>(values.size());
  std::vector<std::byte> out(static_cast<std::size_t>(n / info.block_size) * info.type_size);
  quantize_row(type, values.data(), out.data(), n);
  return out;
}

std::vector<float> random_values(std::mt19937& rng, std::int64_t n, float scale) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(static_cast<std::size_t>(n));
  for (float& x : v) x = dist(rng);
  return v;
}

// Root-mean-square error of a round trip through `type`, relative to the values' RMS.
double round_trip_error(ggml_type type, const std::vector<float>& values) {
  const auto bytes = quantized(type, values);
  std::vector<float> back(values.size());
  dequantize_row(type, bytes.data(), back.data(), static_cast<std::int64_t>(values.size()));
  double err = 0, ref = 0;
  for (std::size_t i = 0; i < values.size(); ++i) {
    err += (back[i] - values[i]) * static_cast<double>(back[i] - values[i]);
    ref += values[i] * static_cast<double>(values[i]);
  }
  return std::sqrt(err / ref);
}

std::vector<std::byte> from_hex(const std::string& hex) {
  std::vector<std::byte> out(hex.size() / 2);
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = static_cast<std::byte>(std::stoi(hex.substr(2 * i, 2), nullptr, 16));
  return out;
}

}  // namespace

TEST_CASE("dequantization matches the gguf package for every weight type") {
  std::ifstream in(CHATAI_SOURCE_DIR "/tests/engine/golden/dequantize_vectors.json");
  REQUIRE(in);
  std::stringstream text;
  text << in.rdbuf();
  auto doc = chatai::json::parse(text.str());
  REQUIRE(doc.ok());
  const std::pair<const char*, ggml_type> cases[] = {
      {"q4_0", ggml_type::q4_0}, {"q4_1", ggml_type::q4_1}, {"q5_0", ggml_type::q5_0}, {"q5_1", ggml_type::q5_1},
      {"q8_0", ggml_type::q8_0}, {"q2_k", ggml_type::q2_k}, {"q3_k", ggml_type::q3_k}, {"q4_k", ggml_type::q4_k},
      {"q5_k", ggml_type::q5_k}, {"q6_k", ggml_type::q6_k}, {"f16", ggml_type::f16},   {"bf16", ggml_type::bf16}};
  for (const auto& [name, type] : cases) {
    CAPTURE(name);
    const auto& entry = (*doc)[name];
    const auto bytes = from_hex(entry["bytes"].GetString());
    const auto& values = entry["values"].GetArray();
    std::vector<float> out(values.Size());
    dequantize_row(type, bytes.data(), out.data(), static_cast<std::int64_t>(out.size()));
    for (rapidjson::SizeType i = 0; i < values.Size(); ++i) {
      CAPTURE(i);
      CHECK(out[i] == static_cast<float>(values[i].GetDouble()));
    }
  }
}

TEST_CASE("the type table's computable types are the ones the kernels cover") {
  for (const auto& info : all_type_infos()) {
    CAPTURE(info.name);
    CHECK(info.computable == is_weight_type_supported(info.type));
    for (cpu_isa isa : supported_cpu_isas()) {
      CHECK(static_cast<bool>(kernels_for(isa).for_type(info.type).dot) == info.computable);
    }
  }
}

TEST_CASE("half-precision conversions round to nearest even") {
  for (std::uint32_t h = 0; h < 0x10000; ++h) {
    const float f = f16_to_f32(static_cast<std::uint16_t>(h));
    if (std::isnan(f)) continue;
    REQUIRE(f32_to_f16(f) == h);
  }
  CHECK(f32_to_f16(1.0f + 1.0f / 2048) == f32_to_f16(1.0f));      // halfway: to even
  CHECK(f32_to_f16(1.0f + 3.0f / 2048) == f32_to_f16(1.0f) + 2);  // halfway: to even
  CHECK(f32_to_f16(70000.0f) == 0x7c00);
  CHECK(bf16_to_f32(f32_to_bf16(1.00390625f)) == 1.0f);  // 1 + 2^-8, halfway: to even
  CHECK(bf16_to_f32(f32_to_bf16(-2.5f)) == -2.5f);
}

TEST_CASE("quantization round trips stay within each type's error") {
  std::mt19937 rng(1);
  const auto values = random_values(rng, 4096, 1.0f);
  // Relative RMS error bounds: about half a quantization step over the values' RMS.
  CHECK(round_trip_error(ggml_type::f32, values) == 0.0);
  CHECK(round_trip_error(ggml_type::f16, values) < 5e-4);
  CHECK(round_trip_error(ggml_type::bf16, values) < 4e-3);
  CHECK(round_trip_error(ggml_type::q8_0, values) < 0.01);
  CHECK(round_trip_error(ggml_type::q6_k, values) < 0.04);
  CHECK(round_trip_error(ggml_type::q5_0, values) < 0.06);
  CHECK(round_trip_error(ggml_type::q5_1, values) < 0.06);
  CHECK(round_trip_error(ggml_type::q5_k, values) < 0.06);
  CHECK(round_trip_error(ggml_type::q4_0, values) < 0.12);
  CHECK(round_trip_error(ggml_type::q4_1, values) < 0.12);
  CHECK(round_trip_error(ggml_type::q4_k, values) < 0.12);
  CHECK(round_trip_error(ggml_type::q3_k, values) < 0.22);
  CHECK(round_trip_error(ggml_type::q2_k, values) < 0.38);
}

TEST_CASE("q8 activation rows: every instruction set matches the reference") {
  std::mt19937 rng(2);
  const std::int64_t n = 256;
  auto x = random_values(rng, n, 2.0f);
  std::fill(x.begin() + 32, x.begin() + 64, 0.0f);  // an all-zero block
  std::vector<std::byte> expected(q8_row_layout::bytes(n));
  quantize_q8_row_reference(x.data(), expected.data(), n);
  const q8_row_view want = q8_row_view::of(expected.data(), n);
  for (cpu_isa isa : supported_cpu_isas()) {
    CAPTURE(to_string(isa));
    std::vector<std::byte> got_bytes(q8_row_layout::bytes(n));
    kernels_for(isa).quantize_q8(x.data(), got_bytes.data(), n);
    const q8_row_view got = q8_row_view::of(got_bytes.data(), n);
    for (std::int64_t i = 0; i < n; ++i) CHECK(std::abs(got.qs[i] - want.qs[i]) <= 1);  // ties may round either way
    for (std::int64_t b = 0; b < n / qk; ++b) {
      CHECK(got.d[b] == doctest::Approx(want.d[b]).epsilon(1e-6));
      int sum = 0;
      for (int j = 0; j < qk; ++j) sum += got.qs[b * qk + j];
      CHECK(got.sums[b] == doctest::Approx(got.d[b] * static_cast<float>(sum)).epsilon(1e-6));
    }
  }
}

TEST_CASE("dot-product kernels match the scalar reference for every type and instruction set") {
  std::mt19937 rng(3);
  for (ggml_type type : all_weight_types) {
    const auto& info = type_info(type);
    // Lengths: several blocks and, for the 32-wide types, odd numbers of blocks (3 and 11).
    const std::int64_t lengths[] = {512, 1536, info.block_size == 256 ? 768 : 96, info.block_size == 256 ? 1280 : 352};
    for (std::int64_t n : lengths) {
      const auto w_values = random_values(rng, n, 0.5f);
      const auto w = quantized(type, w_values);
      std::vector<float> w_ref(static_cast<std::size_t>(n));
      dequantize_row(type, w.data(), w_ref.data(), n);
      for (cpu_isa isa : supported_cpu_isas()) {
        CAPTURE(to_string(type));
        CAPTURE(n);
        CAPTURE(to_string(isa));
        const kernel_table& table = kernels_for(isa);
        const weight_kernel kernel = table.for_type(type);
        REQUIRE(static_cast<bool>(kernel.dot));
        const bool q8 = kernel.activations == activation_kind::q8;
        const std::size_t stride = q8 ? q8_row_layout::bytes(n) : static_cast<std::size_t>(n) * sizeof(float);
        std::vector<std::byte> xs(stride * max_dot_columns);
        std::vector<double> expected(max_dot_columns), magnitude(max_dot_columns);
        for (int j = 0; j < max_dot_columns; ++j) {
          const auto x = random_values(rng, n, 1.0f + static_cast<float>(j));
          std::vector<float> x_ref(x);
          if (q8) {
            table.quantize_q8(x.data(), xs.data() + j * stride, n);
            dequantize_q8_row(xs.data() + j * stride, x_ref.data(), n);
          } else {
            std::memcpy(xs.data() + j * stride, x.data(), stride);
          }
          for (std::int64_t i = 0; i < n; ++i) {
            expected[j] += static_cast<double>(w_ref[i]) * x_ref[i];
            magnitude[j] += std::abs(static_cast<double>(w_ref[i]) * x_ref[i]);
          }
        }
        for (int columns = 1; columns <= max_dot_columns; ++columns) {
          std::vector<float> out(static_cast<std::size_t>(2 * columns), -1.0f);
          kernel.dot(n, w.data(), xs.data(), stride, columns, out.data(), 2);
          for (int j = 0; j < columns; ++j) {
            CAPTURE(columns);
            CAPTURE(j);
            // f32 accumulation of n products: a few ulps of the sum of magnitudes.
            CHECK(std::abs(out[2 * j] - expected[j]) <= 2e-6 * magnitude[j] + 1e-6);
            CHECK(out[2 * j + 1] == -1.0f);
          }
        }
      }
    }
  }
}

TEST_CASE("attention kernels match a double-precision softmax for every instruction set, window and soft cap") {
  std::mt19937 rng(5);
  const std::int64_t kv_stride = 200;
  // Head sizes: the usual one, and one that ends inside a vector.
  for (std::int64_t head_dim : {64, 37}) {
    for (std::int64_t n : {1, 5, 70}) {
      // A window that starts inside a page and one that starts at a page's first position;
      // a soft cap that bends the scores (they are a few units here).
      for (const auto& [first, softcap] : {std::pair<std::int64_t, float>{0, 0.0f}, {n / 2 + n / 7, 0.0f},
                                           {n > 16 ? 16 : 0, 1.5f}, {n - 1, 0.0f}}) {
        const auto q = random_values(rng, head_dim, 1.0f);
        const auto keys = random_values(rng, n * kv_stride, 1.0f);
        const auto values = random_values(rng, n * kv_stride, 1.0f);
        const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim));
        std::vector<double> weights(static_cast<std::size_t>(n));
        double max = -INFINITY, sum = 0;
        for (std::int64_t j = 0; j < n; ++j) {
          double s = 0;
          for (std::int64_t i = 0; i < head_dim; ++i) s += static_cast<double>(q[i]) * keys[j * kv_stride + i];
          weights[j] = s * scale;
          if (softcap > 0) weights[j] = softcap * std::tanh(weights[j] / softcap);
          if (j >= first) max = std::max(max, weights[j]);
        }
        for (std::int64_t j = 0; j < n; ++j) sum += (weights[j] = j < first ? 0.0 : std::exp(weights[j] - max));
        // The same keys and values in pages of n (one page), 16 and 3 positions, laid out in
        // reverse order in memory, 7 floats into each page: values by position, keys by
        // dimension; the slots of a last page past n hold NaN.
        struct layout {
          std::int64_t page_rows;
          std::vector<float> key_store, value_store;
          std::vector<const float*> key_pages, value_pages;
        };
        std::vector<layout> layouts;
        for (std::int64_t page_rows : {n, std::int64_t{16}, std::int64_t{3}}) {
          layout l{page_rows, {}, {}, {}, {}};
          const std::int64_t n_pages = (n + page_rows - 1) / page_rows, page_floats = 7 + page_rows * kv_stride;
          l.key_store.assign(static_cast<std::size_t>(n_pages * page_floats), NAN);
          l.value_store.assign(l.key_store.size(), NAN);
          for (std::int64_t p = 0; p < n_pages; ++p) {
            const std::int64_t at = (n_pages - 1 - p) * page_floats;
            l.key_pages.push_back(l.key_store.data() + at);
            l.value_pages.push_back(l.value_store.data() + at);
            for (std::int64_t r = 0; r < page_rows && p * page_rows + r < n; ++r) {
              const std::int64_t j = p * page_rows + r;
              for (std::int64_t i = 0; i < kv_stride; ++i) l.key_store[at + 7 + i * page_rows + r] = keys[j * kv_stride + i];
              std::copy_n(values.begin() + j * kv_stride, kv_stride, l.value_store.begin() + at + 7 + r * kv_stride);
            }
          }
          layouts.push_back(std::move(l));
        }
        for (cpu_isa isa : supported_cpu_isas()) {
          for (const layout& l : layouts) {
            CAPTURE(to_string(isa));
            CAPTURE(head_dim);
            CAPTURE(n);
            CAPTURE(l.page_rows);
            CAPTURE(first);
            CAPTURE(softcap);
            const cpu::kv_columns key_rows{l.key_pages.data(), 7, l.page_rows};
            const cpu::kv_rows value_rows{l.value_pages.data(), 7, l.page_rows, kv_stride};
            std::vector<float> scores(static_cast<std::size_t>((n + 15) / 16 * 16));
            std::vector<float> out(static_cast<std::size_t>(head_dim + 1), -1.0f);
            kernels_for(isa).attend(head_dim, q.data(), key_rows, value_rows, first, n, static_cast<float>(scale), softcap,
                                    scores.data(), out.data());
            for (std::int64_t i = 0; i < head_dim; ++i) {
              double want = 0;
              for (std::int64_t j = 0; j < n; ++j) want += weights[j] / sum * values[j * kv_stride + i];
              CHECK(std::abs(out[i] - want) <= 1e-5);
            }
            CHECK(out[head_dim] == -1.0f);
          }
        }
      }
    }
  }
}

TEST_CASE("softmax kernels match double-precision exponentials for every instruction set") {
  std::mt19937 rng(9);
  for (std::int64_t n : {1, 7, 8, 9, 17, 255, 1000, 49155}) {
    for (float scale : {1.0f, 1.0f / 0.7f, 2.5f}) {
      auto x = random_values(rng, n + 1, 8.0f);
      x[static_cast<std::size_t>(n)] = -2.0f;  // past n: never read or written
      if (n > 3) {
        x[2] = -INFINITY;  // a masked logit
        x[3] = x[0] - 200.0f;  // far below the maximum after scaling
      }
      double max = -INFINITY;
      for (std::int64_t j = 0; j < n; ++j) max = std::max(max, static_cast<double>(x[j]));
      std::vector<double> want(static_cast<std::size_t>(n));
      double want_sum = 0;
      for (std::int64_t j = 0; j < n; ++j) want_sum += want[j] = std::exp((x[j] - max) * scale);
      for (cpu_isa isa : supported_cpu_isas()) {
        CAPTURE(to_string(isa));
        CAPTURE(n);
        CAPTURE(scale);
        auto got = x;
        const float sum = kernels_for(isa).softmax(got.data(), n, scale);
        CHECK(sum == doctest::Approx(want_sum).epsilon(1e-5));
        for (std::int64_t j = 0; j < n; ++j) CHECK(std::abs(got[j] - want[j]) <= 1e-6 * (1.0 + want[j]));
        if (n > 3) {
          CHECK(got[2] == 0.0f);
          CHECK(got[3] == 0.0f);
        }
        CHECK(got[static_cast<std::size_t>(n)] == -2.0f);
      }
    }
  }
}

TEST_CASE("gated activations and soft caps match double precision for every instruction set") {
  std::mt19937 rng(13);
  for (std::int64_t n : {1, 7, 8, 17, 1000}) {
    auto gate = random_values(rng, n + 1, 12.0f);
    const auto up = random_values(rng, n, 2.0f);
    gate[0] = -0.0f;
    gate[static_cast<std::size_t>(n)] = 7.0f;  // past n: untouched
    for (cpu_isa isa : supported_cpu_isas()) {
      CAPTURE(to_string(isa));
      CAPTURE(n);
      auto silu = gate, gelu = gate;
      kernels_for(isa).swiglu(silu.data(), up.data(), n);
      kernels_for(isa).geglu(gelu.data(), up.data(), n);
      for (std::int64_t i = 0; i < n; ++i) {
        const double x = gate[i], u = up[i];
        const double want_silu = x / (1.0 + std::exp(-x)) * u;
        const double want_gelu = 0.5 * x * (1.0 + std::tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))) * u;
        CHECK(std::abs(silu[i] - want_silu) <= 1e-6 * (1.0 + std::abs(want_silu)));
        CHECK(std::abs(gelu[i] - want_gelu) <= 1e-6 * (1.0 + std::abs(want_gelu)));
      }
      CHECK(silu[static_cast<std::size_t>(n)] == 7.0f);
      CHECK(gelu[static_cast<std::size_t>(n)] == 7.0f);
      auto capped = gate;
      kernels_for(isa).soft_cap(capped.data(), n, 5.0f);
      for (std::int64_t i = 0; i < n; ++i) CHECK(std::abs(capped[i] - 5.0 * std::tanh(gate[i] / 5.0)) <= 1e-5);
      CHECK(capped[static_cast<std::size_t>(n)] == 7.0f);
    }
  }
}

TEST_CASE("attention tiles match one query at a time for every instruction set") {
  std::mt19937 rng(21);
  const std::int64_t kv_stride = 150, n = 75;
  for (std::int64_t head_dim : {64, 37}) {
    for (std::int64_t page_rows : {std::int64_t{16}, std::int64_t{3}}) {
      for (float softcap : {0.0f, 1.5f}) {
        const auto keys = random_values(rng, n * kv_stride, 1.0f);
        const auto values = random_values(rng, n * kv_stride, 1.0f);
        // Pages in reverse order in memory, 5 floats into each: keys by dimension, values by position.
        const std::int64_t n_pages = (n + page_rows - 1) / page_rows, page_floats = 5 + page_rows * kv_stride;
        std::vector<float> key_store(static_cast<std::size_t>(n_pages * page_floats), NAN), value_store(key_store.size(), NAN);
        std::vector<const float*> key_pages, value_pages;
        for (std::int64_t p = 0; p < n_pages; ++p) {
          const std::int64_t at = (n_pages - 1 - p) * page_floats;
          key_pages.push_back(key_store.data() + at);
          value_pages.push_back(value_store.data() + at);
          for (std::int64_t r = 0; r < page_rows && p * page_rows + r < n; ++r) {
            const std::int64_t j = p * page_rows + r;
            for (std::int64_t i = 0; i < kv_stride; ++i) key_store[at + 5 + i * page_rows + r] = keys[j * kv_stride + i];
            std::copy_n(values.begin() + j * kv_stride, kv_stride, value_store.begin() + at + 5 + r * kv_stride);
          }
        }
        const cpu::kv_columns key_rows{key_pages.data(), 5, page_rows};
        const cpu::kv_rows value_rows{value_pages.data(), 5, page_rows, kv_stride};
        // A run of positions 40..55 with three heads each; windows of 9 on some (Gemma's kind).
        std::vector<std::vector<float>> qs;
        std::vector<cpu::tile_query> tile;
        std::vector<std::vector<float>> outs;
        for (std::int64_t pos = 40; pos < 56; ++pos) {
          for (int h = 0; h < 3; ++h) {
            qs.push_back(random_values(rng, head_dim, 1.0f));
            outs.emplace_back(static_cast<std::size_t>(head_dim + 1), -1.0f);
            tile.push_back({nullptr, nullptr, h == 2 ? pos + 1 - 9 : 0, pos + 1});
          }
        }
        for (std::size_t i = 0; i < tile.size(); ++i) {
          tile[i].q = qs[i].data();
          tile[i].out = outs[i].data();
        }
        for (cpu_isa isa : supported_cpu_isas()) {
          CAPTURE(to_string(isa));
          CAPTURE(head_dim);
          CAPTURE(page_rows);
          CAPTURE(softcap);
          std::vector<float> scratch(2 * tile.size() + 80);
          kernels_for(isa).attend_tile(head_dim, tile.data(), static_cast<std::int64_t>(tile.size()), key_rows, value_rows,
                                       0.125f, softcap, scratch.data());
          for (std::size_t i = 0; i < tile.size(); ++i) {
            std::vector<float> want(static_cast<std::size_t>(head_dim)), scores(80);
            kernels_for(isa).attend(head_dim, tile[i].q, key_rows, value_rows, tile[i].first, tile[i].n, 0.125f, softcap,
                                    scores.data(), want.data());
            for (std::int64_t c = 0; c < head_dim; ++c) CHECK(std::abs(outs[i][c] - want[c]) <= 1e-5);
            CHECK(outs[i][head_dim] == -1.0f);
          }
        }
      }
    }
  }
}
