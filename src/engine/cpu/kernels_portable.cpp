// Plain C++ kernels: the fallback for CPUs without the vector extensions, with the same
// integer arithmetic per block as the vector kernels.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels.hpp"
#include "quant_blocks.hpp"

namespace chatai::engine::cpu {
namespace {

float dot_f32_one(std::int64_t n, const void* w, const std::byte* x) {
  const auto* a = static_cast<const float*>(w);
  const auto* b = reinterpret_cast<const float*>(x);
  float sum = 0.0f;
  for (std::int64_t i = 0; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

float dot_f16_one(std::int64_t n, const void* w, const std::byte* x) {
  const auto* a = static_cast<const std::uint16_t*>(w);
  const auto* b = reinterpret_cast<const float*>(x);
  float sum = 0.0f;
  for (std::int64_t i = 0; i < n; ++i) sum += f16_to_f32(a[i]) * b[i];
  return sum;
}

float dot_bf16_one(std::int64_t n, const void* w, const std::byte* x) {
  const auto* a = static_cast<const std::uint16_t*>(w);
  const auto* b = reinterpret_cast<const float*>(x);
  float sum = 0.0f;
  for (std::int64_t i = 0; i < n; ++i) sum += bf16_to_f32(a[i]) * b[i];
  return sum;
}

float dot_q8_0_one(std::int64_t n, const void* w, const std::byte* x) {
  const auto* b = static_cast<const block_q8_0*>(w);
  const q8_row_view a = q8_row_view::of(x, n);
  float sum = 0.0f;
  for (std::int64_t i = 0; i < n / qk; ++i) {
    int s = 0;
    for (int j = 0; j < qk; ++j) s += b[i].qs[j] * a.qs[i * qk + j];
    sum += f16_to_f32(b[i].d) * a.d[i] * static_cast<float>(s);
  }
  return sum;
}

float dot_q4_0_one(std::int64_t n, const void* w, const std::byte* x) {
  const auto* b = static_cast<const block_q4_0*>(w);
  const q8_row_view a = q8_row_view::of(x, n);
  float sum = 0.0f;
  for (std::int64_t i = 0; i < n / qk; ++i) {
    const std::int8_t* q = a.qs + i * qk;
    int s = 0;
    for (int j = 0; j < qk / 2; ++j) {
      s += ((b[i].qs[j] & 0x0f) - 8) * q[j] + ((b[i].qs[j] >> 4) - 8) * q[j + qk / 2];
    }
    sum += f16_to_f32(b[i].d) * a.d[i] * static_cast<float>(s);
  }
  return sum;
}

float dot_q4_1_one(std::int64_t n, const void* w, const std::byte* x) {
  const auto* b = static_cast<const block_q4_1*>(w);
  const q8_row_view a = q8_row_view::of(x, n);
  float sum = 0.0f;
  for (std::int64_t i = 0; i < n / qk; ++i) {
    const std::int8_t* q = a.qs + i * qk;
    int s = 0;
    for (int j = 0; j < qk / 2; ++j) s += (b[i].qs[j] & 0x0f) * q[j] + (b[i].qs[j] >> 4) * q[j + qk / 2];
    sum += f16_to_f32(b[i].d) * a.d[i] * static_cast<float>(s) + f16_to_f32(b[i].m) * a.sums[i];
  }
  return sum;
}

float dot_q5_0_one(std::int64_t n, const void* w, const std::byte* x) {
  const auto* b = static_cast<const block_q5_0*>(w);
  const q8_row_view a = q8_row_view::of(x, n);
  float sum = 0.0f;
  for (std::int64_t i = 0; i < n / qk; ++i) {
    int q[qk];
    q5_levels(b[i], q);
    int s = 0;
    for (int j = 0; j < qk; ++j) s += (q[j] - 16) * a.qs[i * qk + j];
    sum += f16_to_f32(b[i].d) * a.d[i] * static_cast<float>(s);
  }
  return sum;
}

float dot_q5_1_one(std::int64_t n, const void* w, const std::byte* x) {
  const auto* b = static_cast<const block_q5_1*>(w);
  const q8_row_view a = q8_row_view::of(x, n);
  float sum = 0.0f;
  for (std::int64_t i = 0; i < n / qk; ++i) {
    int q[qk];
    q5_levels(b[i], q);
    int s = 0;
    for (int j = 0; j < qk; ++j) s += q[j] * a.qs[i * qk + j];
    sum += f16_to_f32(b[i].d) * a.d[i] * static_cast<float>(s) + f16_to_f32(b[i].m) * a.sums[i];
  }
  return sum;
}

// Q2_K: per activation block, the products with the levels and, for the mins, the sums of
// each 16-element half, weighted by the sub-block scales in integers.
float dot_q2_k_one(std::int64_t n, const void* w, const std::byte* x) {
  const auto* b = static_cast<const block_q2_k*>(w);
  const q8_row_view a = q8_row_view::of(x, n);
  float sum = 0.0f;
  for (std::int64_t i = 0; i < n / qk_k; ++i) {
    const float d = f16_to_f32(b[i].d);
    const float dmin = f16_to_f32(b[i].dmin);
    for (int k = 0; k < qk_k / qk; ++k) {
      const std::uint8_t* qw = b[i].qs + 32 * (k / 4);
      const int shift = 2 * (k % 4);
      const std::int8_t* q = a.qs + (i * 8 + k) * qk;
      int scaled = 0, offset = 0;
      for (int g = 0; g < 2; ++g) {
        const std::uint8_t sc = b[i].scales[2 * k + g];
        int s = 0, xs = 0;
        for (int l = 16 * g; l < 16 * g + 16; ++l) {
          s += ((qw[l] >> shift) & 3) * q[l];
          xs += q[l];
        }
        scaled += (sc & 0x0f) * s;
        offset += (sc >> 4) * xs;
      }
      sum += a.d[i * 8 + k] * (d * static_cast<float>(scaled) - dmin * static_cast<float>(offset));
    }
  }
  return sum;
}

float dot_q3_k_one(std::int64_t n, const void* w, const std::byte* x) {
  const auto* b = static_cast<const block_q3_k*>(w);
  const q8_row_view a = q8_row_view::of(x, n);
  float sum = 0.0f;
  for (std::int64_t i = 0; i < n / qk_k; ++i) {
    const float d = f16_to_f32(b[i].d);
    for (int k = 0; k < qk_k / qk; ++k) {
      const std::uint8_t* qw = b[i].qs + 32 * (k / 4);
      const int shift = 2 * (k % 4);
      const int high_bit = 4 * (k / 4) + k % 4;
      const std::int8_t* q = a.qs + (i * 8 + k) * qk;
      int block_sum = 0;
      for (int g = 0; g < 2; ++g) {
        int s = 0;
        for (int l = 16 * g; l < 16 * g + 16; ++l) {
          const int level = ((qw[l] >> shift) & 3) + 4 * ((b[i].hmask[l] >> high_bit) & 1) - 4;
          s += level * q[l];
        }
        block_sum += q3_k_scale(b[i].scales, 2 * k + g) * s;
      }
      sum += d * a.d[i * 8 + k] * static_cast<float>(block_sum);
    }
  }
  return sum;
}

float dot_q4_k_one(std::int64_t n, const void* w, const std::byte* x) {
  const auto* b = static_cast<const block_q4_k*>(w);
  const q8_row_view a = q8_row_view::of(x, n);
  float sum = 0.0f;
  for (std::int64_t i = 0; i < n / qk_k; ++i) {
    const float d = f16_to_f32(b[i].d);
    const float dmin = f16_to_f32(b[i].dmin);
    for (int j = 0; j < 8; ++j) {
      int scale, min;
      k4_scale_min(b[i].scales, j, scale, min);
      const std::uint8_t* qw = b[i].qs + 32 * (j / 2);
      const int shift = (j % 2) * 4;
      const std::int64_t k = i * 8 + j;  // activation block
      const std::int8_t* q = a.qs + k * qk;
      int s = 0;
      for (int l = 0; l < 32; ++l) s += ((qw[l] >> shift) & 0x0f) * q[l];
      sum += d * static_cast<float>(scale) * a.d[k] * static_cast<float>(s) - dmin * static_cast<float>(min) * a.sums[k];
    }
  }
  return sum;
}

float dot_q5_k_one(std::int64_t n, const void* w, const std::byte* x) {
  const auto* b = static_cast<const block_q5_k*>(w);
  const q8_row_view a = q8_row_view::of(x, n);
  float sum = 0.0f;
  for (std::int64_t i = 0; i < n / qk_k; ++i) {
    const float d = f16_to_f32(b[i].d);
    const float dmin = f16_to_f32(b[i].dmin);
    for (int j = 0; j < 8; ++j) {
      int scale, min;
      k4_scale_min(b[i].scales, j, scale, min);
      const std::uint8_t* qw = b[i].qs + 32 * (j / 2);
      const int shift = (j % 2) * 4;
      const std::int64_t k = i * 8 + j;  // activation block
      const std::int8_t* q = a.qs + k * qk;
      int s = 0;
      for (int l = 0; l < 32; ++l) s += (((qw[l] >> shift) & 0x0f) | (((b[i].qh[l] >> j) & 1) << 4)) * q[l];
      sum += d * static_cast<float>(scale) * a.d[k] * static_cast<float>(s) - dmin * static_cast<float>(min) * a.sums[k];
    }
  }
  return sum;
}

float dot_q6_k_one(std::int64_t n, const void* w, const std::byte* x) {
  const auto* b = static_cast<const block_q6_k*>(w);
  const q8_row_view a = q8_row_view::of(x, n);
  float sum = 0.0f;
  for (std::int64_t i = 0; i < n / qk_k; ++i) {
    const float d = f16_to_f32(b[i].d);
    int levels[qk_k];
    for (int half = 0; half < 2; ++half) {
      const std::uint8_t* ql = b[i].ql + 64 * half;
      const std::uint8_t* qh = b[i].qh + 32 * half;
      int* y = levels + 128 * half;
      for (int l = 0; l < 32; ++l) {
        y[l] = ((ql[l] & 0x0f) | (((qh[l] >> 0) & 3) << 4)) - 32;
        y[l + 32] = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) - 32;
        y[l + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        y[l + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      }
    }
    for (int k = 0; k < qk_k / qk; ++k) {
      const std::int8_t* q = a.qs + (i * 8 + k) * qk;
      int block_sum = 0;
      for (int g = 0; g < 2; ++g) {
        int s = 0;
        for (int l = 0; l < 16; ++l) s += levels[32 * k + 16 * g + l] * q[16 * g + l];
        block_sum += s * b[i].scales[2 * k + g];
      }
      sum += d * a.d[i * 8 + k] * static_cast<float>(block_sum);
    }
  }
  return sum;
}

template <float (*one)(std::int64_t, const void*, const std::byte*)>
void columns(std::int64_t n, const void* w, const std::byte* x, std::size_t x_stride, int n_columns,
             float* out, std::size_t out_stride) {
  for (int j = 0; j < n_columns; ++j) out[j * out_stride] = one(n, w, x + j * x_stride);
}

void quantize_q8(const float* src, std::byte* dst, std::int64_t n) {
  auto* qs = reinterpret_cast<std::int8_t*>(dst);
  auto* d = reinterpret_cast<float*>(dst + n);
  float* sums = d + n / qk;
  for (std::int64_t i = 0; i < n / qk; ++i) {
    const float* x = src + i * qk;
    float amax = 0.0f;
    for (int j = 0; j < qk; ++j) amax = x[j] > amax ? x[j] : (-x[j] > amax ? -x[j] : amax);
    const float inverse = amax != 0.0f ? 127.0f / amax : 0.0f;
    int sum = 0;
    for (int j = 0; j < qk; ++j) {
      const float v = x[j] * inverse;
      const int q = static_cast<int>(v + (v >= 0.0f ? 0.5f : -0.5f));
      qs[i * qk + j] = static_cast<std::int8_t>(q);
      sum += q;
    }
    d[i] = amax / 127.0f;
    sums[i] = d[i] * static_cast<float>(sum);
  }
}

void soft_cap(float* x, std::int64_t n, float cap) {
  for (std::int64_t i = 0; i < n; ++i) x[i] = cap * std::tanh(x[i] / cap);
}

void attend(std::int64_t head_dim, const float* q, const kv_columns& keys, const kv_rows& values, std::int64_t first,
            std::int64_t n, float scale, float softcap, float* scores, float* out) {
  score_columns(head_dim, q, keys, first, n, scale, scores);
  if (softcap > 0.0f) soft_cap(scores + first, n - first, softcap);
  float max = -INFINITY;
  for (std::int64_t j = first; j < n; ++j) max = std::max(max, scores[j]);
  float sum = 0.0f;
  for (std::int64_t j = first; j < n; ++j) {
    scores[j] = std::exp(scores[j] - max);
    sum += scores[j];
  }
  std::fill(out, out + head_dim, 0.0f);
  for_each_row(values, first, n, [&](std::int64_t j, const float* v) {
    for (std::int64_t i = 0; i < head_dim; ++i) out[i] += scores[j] * v[i];
  });
  const float inverse = 1.0f / sum;
  for (std::int64_t i = 0; i < head_dim; ++i) out[i] *= inverse;
}

void attend_tile(std::int64_t head_dim, const tile_query* queries, std::int64_t count, const kv_columns& keys,
                 const kv_rows& values, float scale, float softcap, float* scratch) {
  attend_each(attend, head_dim, queries, count, keys, values, scale, softcap, scratch);
}


float softmax(float* x, std::int64_t n, float scale) {
  float max = -INFINITY;
  for (std::int64_t j = 0; j < n; ++j) max = std::max(max, x[j]);
  float sum = 0.0f;
  for (std::int64_t j = 0; j < n; ++j) {
    const float a = (x[j] - max) * scale;
    x[j] = a >= -87.0f ? std::exp(a) : 0.0f;
    sum += x[j];
  }
  return sum;
}

void swiglu(float* gate, const float* up, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) gate[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

void geglu(float* gate, const float* up, std::int64_t n) {
  constexpr float c = 0.7978845608028654f;  // sqrt(2 / pi)
  for (std::int64_t i = 0; i < n; ++i) {
    const float x = gate[i];
    gate[i] = 0.5f * x * (1.0f + std::tanh(c * (x + 0.044715f * x * x * x))) * up[i];
  }
}

}  // namespace

const kernel_table& portable_kernels() noexcept {
  static const kernel_table table{
      cpu_isa::portable,
      columns<dot_f32_one>,
      columns<dot_f16_one>,
      columns<dot_bf16_one>,
      columns<dot_q8_0_one>,
      columns<dot_q4_0_one>,
      columns<dot_q4_1_one>,
      columns<dot_q5_0_one>,
      columns<dot_q5_1_one>,
      columns<dot_q2_k_one>,
      columns<dot_q3_k_one>,
      columns<dot_q4_k_one>,
      columns<dot_q5_k_one>,
      columns<dot_q6_k_one>,
      quantize_q8,
      attend,
      attend_tile,
      softmax,
      soft_cap,
      swiglu,
      geglu,
  };
  return table;
}

}  // namespace chatai::engine::cpu
