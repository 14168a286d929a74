// The CPU references of the CUDA kernels.
#include "reference.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include "../cpu/quant_blocks.hpp"
#include "../cpu/quant_reference.hpp"

namespace chatai::engine::cuda {
namespace {

std::size_t row_bytes(ggml_type type, std::int64_t cols) {
  const auto& info = type_info(type);
  return static_cast<std::size_t>(cols / info.block_size) * info.type_size;
}

}  // namespace

void reference_matmul(ggml_type type, const std::byte* w, std::int64_t rows, std::int64_t cols, const float* x,
                      std::int64_t n_tokens, float* y, std::int64_t y_stride) {
  std::vector<float> row(static_cast<std::size_t>(cols));  // [cols]
  const std::size_t stride = row_bytes(type, cols);
  for (std::int64_t r = 0; r < rows; ++r) {
    cpu::dequantize_row(type, w + static_cast<std::size_t>(r) * stride, row.data(), cols);
    for (std::int64_t t = 0; t < n_tokens; ++t) {
      double sum = 0.0;
      for (std::int64_t i = 0; i < cols; ++i) sum += static_cast<double>(row[static_cast<std::size_t>(i)]) * x[t * cols + i];
      y[t * y_stride + r] = static_cast<float>(sum);
    }
  }
}

void reference_embedding(ggml_type type, const std::byte* table, std::int64_t cols, const std::int32_t* tokens,
                         std::int64_t n_tokens, float* out) {
  const std::size_t stride = row_bytes(type, cols);
  for (std::int64_t t = 0; t < n_tokens; ++t) {
    cpu::dequantize_row(type, table + static_cast<std::size_t>(tokens[t]) * stride, out + t * cols, cols);
  }
}

void reference_dequantize_bf16(ggml_type type, const std::byte* w, std::int64_t rows, std::int64_t cols,
                               std::uint16_t* out) {
  std::vector<float> row(static_cast<std::size_t>(cols));  // [cols]
  const std::size_t stride = row_bytes(type, cols);
  for (std::int64_t r = 0; r < rows; ++r) {
    cpu::dequantize_row(type, w + static_cast<std::size_t>(r) * stride, row.data(), cols);
    reference_to_bf16(row.data(), cols, out + r * cols);
  }
}

void reference_to_bf16(const float* x, std::int64_t n, std::uint16_t* out) {
  for (std::int64_t i = 0; i < n; ++i) out[i] = cpu::f32_to_bf16(x[i]);
}

void reference_add_rmsnorm(float* x, const float* add, const float* weight, float eps, std::int64_t n_tokens,
                           std::int64_t n, const std::int32_t* rows, float* h) {
  for (std::int64_t t = 0; t < n_tokens; ++t) {
    const std::int64_t src = rows ? rows[t] : t;
    float* xr = x + src * n;
    if (add) {
      for (std::int64_t i = 0; i < n; ++i) xr[i] += add[src * n + i];
    }
    double sum = 0.0;
    for (std::int64_t i = 0; i < n; ++i) sum += static_cast<double>(xr[i]) * xr[i];
    const auto scale = static_cast<float>(1.0 / std::sqrt(sum / static_cast<double>(n) + eps));
    for (std::int64_t i = 0; i < n; ++i) h[t * n + i] = xr[i] * scale * weight[i];
  }
}

void reference_rope_store(const rope_params& p, float* q, float* k, const float* v, const float* bq, const float* bk,
                          const float* bv, const double* inv_freq, std::int64_t n_tokens, const step_map& map,
                          const kv_layout& layout, std::int64_t layer, std::uint16_t* k_cache, std::uint16_t* v_cache) {
  const std::int64_t q_dim = p.n_head * p.head_dim, kv_dim = p.n_head_kv * p.head_dim, half = p.rope_dim / 2;
  const auto rotate = [&](float* head, std::int64_t position) {
    for (std::int64_t i = 0; i < half; ++i) {
      const std::int64_t a = p.neox ? i : 2 * i;
      const std::int64_t b = p.neox ? i + half : 2 * i + 1;
      const double angle = static_cast<double>(position) * inv_freq[i];
      const auto c = static_cast<float>(std::cos(angle));
      const auto s = static_cast<float>(std::sin(angle));
      const float xa = head[a], xb = head[b];
      head[a] = xa * c - xb * s;
      head[b] = xa * s + xb * c;
    }
  };
  for (std::int64_t t = 0; t < n_tokens; ++t) {
    float* qt = q + t * q_dim;
    float* kt = k + t * kv_dim;
    const std::int64_t position = map.positions[t];
    for (std::int64_t i = 0; i < q_dim && bq; ++i) qt[i] += bq[i];
    for (std::int64_t i = 0; i < kv_dim && bk; ++i) kt[i] += bk[i];
    for (std::int64_t h = 0; h < p.n_head; ++h) rotate(qt + h * p.head_dim, position);
    for (std::int64_t h = 0; h < p.n_head_kv; ++h) rotate(kt + h * p.head_dim, position);
    const std::int64_t page = map.pages[map.tables[t] + position / layout.page_tokens];
    const std::int64_t at = layout.offset(layer, page, position % layout.page_tokens);
    for (std::int64_t i = 0; i < kv_dim; ++i) {
      k_cache[at + i] = cpu::f32_to_f16(kt[i]);
      v_cache[at + i] = cpu::f32_to_f16(v[t * kv_dim + i] + (bv ? bv[i] : 0.0f));
    }
  }
}

void reference_attention(const rope_params& p, const float* q, const std::uint16_t* k_cache, const std::uint16_t* v_cache,
                         std::int64_t n_tokens, const step_map& map, const kv_layout& layout, std::int64_t layer,
                         float scale, float* out, std::int64_t window, float softcap) {
  const std::int64_t hd = p.head_dim, q_dim = p.n_head * hd, group = p.n_head / p.n_head_kv;
  std::vector<double> scores;
  for (std::int64_t t = 0; t < n_tokens; ++t) {
    const std::int64_t n = map.positions[t] + 1;
    scores.assign(static_cast<std::size_t>(n), 0.0);
    for (std::int64_t h = 0; h < p.n_head; ++h) {
      const float* qh = q + t * q_dim + h * hd;         // [hd]
      const std::int64_t column = (h / group) * hd;
      double max = -INFINITY;
      for (std::int64_t j = 0; j < n; ++j) {
        const std::int64_t page = map.pages[map.tables[t] + j / layout.page_tokens];
        const std::uint16_t* kj = k_cache + layout.offset(layer, page, j % layout.page_tokens) + column;  // [hd]
        double dot = 0.0;
        for (std::int64_t i = 0; i < hd; ++i) dot += static_cast<double>(qh[i]) * cpu::f16_to_f32(kj[i]);
        double score = dot * scale;
        if (softcap > 0.0f) score = softcap * std::tanh(score / softcap);
        scores[static_cast<std::size_t>(j)] = score;
        if (window <= 0 || n - j <= window) max = std::max(max, score);
      }
      double total = 0.0;
      for (std::int64_t j = 0; j < n; ++j) {
        double& s = scores[static_cast<std::size_t>(j)];
        s = window > 0 && n - j > window ? 0.0 : std::exp(s - max);
        total += s;
      }
      float* oh = out + t * q_dim + h * hd;  // [hd]
      for (std::int64_t i = 0; i < hd; ++i) {
        double sum = 0.0;
        for (std::int64_t j = 0; j < n; ++j) {
          const std::int64_t page = map.pages[map.tables[t] + j / layout.page_tokens];
          sum += scores[static_cast<std::size_t>(j)] *
                 cpu::f16_to_f32(v_cache[layout.offset(layer, page, j % layout.page_tokens) + column + i]);
        }
        oh[i] = static_cast<float>(sum / total);
      }
    }
  }
}

void reference_swiglu(float* gate, const float* up, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) gate[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

void reference_geglu(float* gate, const float* up, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) {
    const double g = gate[i];
    gate[i] = static_cast<float>(0.5 * g * (1.0 + std::tanh(0.7978845608028654 * (g + 0.044715 * g * g * g))) * up[i]);
  }
}

}  // namespace chatai::engine::cuda
