// Scalar reference conversions of the weight types and of q8 activation rows.
#include "quant_reference.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "quant_blocks.hpp"

namespace chatai::engine::cpu {
namespace {

void dequantize_q4_0(const block_q4_0* b, float* y, std::int64_t nb) {
  for (std::int64_t i = 0; i < nb; ++i, y += qk) {
    const float d = f16_to_f32(b[i].d);
    for (int j = 0; j < qk / 2; ++j) {
      y[j] = d * static_cast<float>((b[i].qs[j] & 0x0f) - 8);
      y[j + qk / 2] = d * static_cast<float>((b[i].qs[j] >> 4) - 8);
    }
  }
}

void dequantize_q4_1(const block_q4_1* b, float* y, std::int64_t nb) {
  for (std::int64_t i = 0; i < nb; ++i, y += qk) {
    const float d = f16_to_f32(b[i].d);
    const float m = f16_to_f32(b[i].m);
    for (int j = 0; j < qk / 2; ++j) {
      y[j] = d * static_cast<float>(b[i].qs[j] & 0x0f) + m;
      y[j + qk / 2] = d * static_cast<float>(b[i].qs[j] >> 4) + m;
    }
  }
}

void dequantize_q8_0(const block_q8_0* b, float* y, std::int64_t nb) {
  for (std::int64_t i = 0; i < nb; ++i, y += qk) {
    const float d = f16_to_f32(b[i].d);
    for (int j = 0; j < qk; ++j) y[j] = d * static_cast<float>(b[i].qs[j]);
  }
}

// The 6-bit scale and min of sub-block j (0..7) of a Q4_K super-block.
void q4_k_scale_min(int j, const std::uint8_t* q, int& scale, int& min) {
  if (j < 4) {
    scale = q[j] & 63;
    min = q[j + 4] & 63;
  } else {
    scale = (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4);
    min = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

void dequantize_q4_k(const block_q4_k* b, float* y, std::int64_t nb) {
  for (std::int64_t i = 0; i < nb; ++i) {
    const float d = f16_to_f32(b[i].d);
    const float dmin = f16_to_f32(b[i].dmin);
    const std::uint8_t* q = b[i].qs;
    for (int j = 0; j < 8; j += 2, q += 32) {
      int sc0, m0, sc1, m1;
      q4_k_scale_min(j, b[i].scales, sc0, m0);
      q4_k_scale_min(j + 1, b[i].scales, sc1, m1);
      for (int l = 0; l < 32; ++l) *y++ = d * static_cast<float>(sc0) * static_cast<float>(q[l] & 0x0f) - dmin * static_cast<float>(m0);
      for (int l = 0; l < 32; ++l) *y++ = d * static_cast<float>(sc1) * static_cast<float>(q[l] >> 4) - dmin * static_cast<float>(m1);
    }
  }
}

void dequantize_q6_k(const block_q6_k* b, float* y, std::int64_t nb) {
  for (std::int64_t i = 0; i < nb; ++i) {
    const float d = f16_to_f32(b[i].d);
    const std::uint8_t* ql = b[i].ql;
    const std::uint8_t* qh = b[i].qh;
    const std::int8_t* sc = b[i].scales;
    for (int half = 0; half < 2; ++half, y += 128, ql += 64, qh += 32, sc += 8) {
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        const int q1 = ((ql[l] & 0x0f) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int q2 = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        y[l] = d * static_cast<float>(sc[is] * q1);
        y[l + 32] = d * static_cast<float>(sc[is + 2] * q2);
        y[l + 64] = d * static_cast<float>(sc[is + 4] * q3);
        y[l + 96] = d * static_cast<float>(sc[is + 6] * q4);
      }
    }
  }
}

int round_to_int(float x) { return static_cast<int>(std::nearbyint(x)); }

void quantize_q4_0(const float* x, block_q4_0* b, std::int64_t nb) {
  for (std::int64_t i = 0; i < nb; ++i, x += qk) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < qk; ++j) {
      if (std::fabs(x[j]) > amax) {
        amax = std::fabs(x[j]);
        max = x[j];
      }
    }
    const float d = max / -8.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    b[i].d = f32_to_f16(d);
    for (int j = 0; j < qk / 2; ++j) {
      const int q0 = std::min(15, static_cast<int>(x[j] * id + 8.5f));
      const int q1 = std::min(15, static_cast<int>(x[j + qk / 2] * id + 8.5f));
      b[i].qs[j] = static_cast<std::uint8_t>(q0 | (q1 << 4));
    }
  }
}

void quantize_q4_1(const float* x, block_q4_1* b, std::int64_t nb) {
  for (std::int64_t i = 0; i < nb; ++i, x += qk) {
    const auto [lo, hi] = std::minmax_element(x, x + qk);
    const float d = (*hi - *lo) / 15.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    b[i].d = f32_to_f16(d);
    b[i].m = f32_to_f16(*lo);
    for (int j = 0; j < qk / 2; ++j) {
      const int q0 = std::min(15, static_cast<int>((x[j] - *lo) * id + 0.5f));
      const int q1 = std::min(15, static_cast<int>((x[j + qk / 2] - *lo) * id + 0.5f));
      b[i].qs[j] = static_cast<std::uint8_t>(q0 | (q1 << 4));
    }
  }
}

void quantize_q8_0(const float* x, block_q8_0* b, std::int64_t nb) {
  for (std::int64_t i = 0; i < nb; ++i, x += qk) {
    float amax = 0.0f;
    for (int j = 0; j < qk; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    b[i].d = f32_to_f16(d);
    for (int j = 0; j < qk; ++j) b[i].qs[j] = static_cast<std::int8_t>(round_to_int(x[j] * id));
  }
}

void quantize_q4_k(const float* x, block_q4_k* b, std::int64_t nb) {
  for (std::int64_t i = 0; i < nb; ++i, x += qk_k) {
    float scales[8], mins[8];
    for (int j = 0; j < 8; ++j) {
      const float* s = x + 32 * j;
      const float lo = std::min(0.0f, *std::min_element(s, s + 32));
      const float hi = *std::max_element(s, s + 32);
      scales[j] = (hi - lo) / 15.0f;
      mins[j] = -lo;
    }
    const float max_scale = *std::max_element(scales, scales + 8);
    const float max_min = *std::max_element(mins, mins + 8);
    const float d = max_scale / 63.0f;
    const float dmin = max_min / 63.0f;
    b[i].d = f32_to_f16(d);
    b[i].dmin = f32_to_f16(dmin);
    const float d_stored = f16_to_f32(b[i].d);
    const float dmin_stored = f16_to_f32(b[i].dmin);
    std::uint8_t sc[8], mn[8];
    for (int j = 0; j < 8; ++j) {
      sc[j] = static_cast<std::uint8_t>(std::clamp(d_stored > 0 ? round_to_int(scales[j] / d_stored) : 0, 0, 63));
      mn[j] = static_cast<std::uint8_t>(std::clamp(dmin_stored > 0 ? round_to_int(mins[j] / dmin_stored) : 0, 0, 63));
    }
    std::memset(b[i].scales, 0, sizeof b[i].scales);
    for (int j = 0; j < 8; ++j) {
      if (j < 4) {
        b[i].scales[j] = sc[j];
        b[i].scales[j + 4] = mn[j];
      } else {
        b[i].scales[j + 4] = static_cast<std::uint8_t>((sc[j] & 0x0f) | ((mn[j] & 0x0f) << 4));
        b[i].scales[j - 4] |= static_cast<std::uint8_t>((sc[j] >> 4) << 6);
        b[i].scales[j] |= static_cast<std::uint8_t>((mn[j] >> 4) << 6);
      }
    }
    std::uint8_t levels[qk_k];
    for (int j = 0; j < 8; ++j) {
      const float step = d_stored * static_cast<float>(sc[j]);
      const float offset = dmin_stored * static_cast<float>(mn[j]);
      for (int l = 0; l < 32; ++l) {
        const int q = step > 0 ? round_to_int((x[32 * j + l] + offset) / step) : 0;
        levels[32 * j + l] = static_cast<std::uint8_t>(std::clamp(q, 0, 15));
      }
    }
    for (int j = 0; j < 4; ++j) {
      for (int l = 0; l < 32; ++l) {
        b[i].qs[32 * j + l] = static_cast<std::uint8_t>(levels[64 * j + l] | (levels[64 * j + 32 + l] << 4));
      }
    }
  }
}

void quantize_q6_k(const float* x, block_q6_k* b, std::int64_t nb) {
  for (std::int64_t i = 0; i < nb; ++i, x += qk_k) {
    float scales[16];
    float max_abs_scale = 0.0f, max_scale = 0.0f;
    for (int j = 0; j < 16; ++j) {
      float amax = 0.0f, max = 0.0f;
      for (int l = 0; l < 16; ++l) {
        if (std::fabs(x[16 * j + l]) > amax) {
          amax = std::fabs(x[16 * j + l]);
          max = x[16 * j + l];
        }
      }
      scales[j] = max / -32.0f;
      if (std::fabs(scales[j]) > max_abs_scale) {
        max_abs_scale = std::fabs(scales[j]);
        max_scale = scales[j];
      }
    }
    const float d = max_scale / -128.0f;
    b[i].d = f32_to_f16(d);
    const float d_stored = f16_to_f32(b[i].d);
    std::uint8_t levels[qk_k];
    for (int j = 0; j < 16; ++j) {
      const int sc = d_stored != 0.0f ? std::clamp(round_to_int(scales[j] / d_stored), -128, 127) : 0;
      b[i].scales[j] = static_cast<std::int8_t>(sc);
      const float step = d_stored * static_cast<float>(sc);
      for (int l = 0; l < 16; ++l) {
        const int q = step != 0.0f ? round_to_int(x[16 * j + l] / step) : 0;
        levels[16 * j + l] = static_cast<std::uint8_t>(std::clamp(q, -32, 31) + 32);
      }
    }
    std::uint8_t* ql = b[i].ql;
    std::uint8_t* qh = b[i].qh;
    for (int n = 0; n < qk_k; n += 128, ql += 64, qh += 32) {
      for (int l = 0; l < 32; ++l) {
        const std::uint8_t q1 = levels[n + l], q2 = levels[n + l + 32];
        const std::uint8_t q3 = levels[n + l + 64], q4 = levels[n + l + 96];
        ql[l] = static_cast<std::uint8_t>((q1 & 0x0f) | ((q3 & 0x0f) << 4));
        ql[l + 32] = static_cast<std::uint8_t>((q2 & 0x0f) | ((q4 & 0x0f) << 4));
        qh[l] = static_cast<std::uint8_t>((q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6));
      }
    }
  }
}

}  // namespace

bool is_weight_type_supported(ggml_type type) noexcept {
  switch (type) {
    case ggml_type::f32:
    case ggml_type::f16:
    case ggml_type::bf16:
    case ggml_type::q8_0:
    case ggml_type::q4_0:
    case ggml_type::q4_1:
    case ggml_type::q4_k:
    case ggml_type::q6_k:
      return true;
    default:
      return false;
  }
}

void dequantize_row(ggml_type type, const void* src, float* dst, std::int64_t n) noexcept {
  switch (type) {
    case ggml_type::f32:
      std::memcpy(dst, src, static_cast<std::size_t>(n) * sizeof(float));
      break;
    case ggml_type::f16:
      for (std::int64_t i = 0; i < n; ++i) dst[i] = f16_to_f32(static_cast<const std::uint16_t*>(src)[i]);
      break;
    case ggml_type::bf16:
      for (std::int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(static_cast<const std::uint16_t*>(src)[i]);
      break;
    case ggml_type::q8_0: dequantize_q8_0(static_cast<const block_q8_0*>(src), dst, n / qk); break;
    case ggml_type::q4_0: dequantize_q4_0(static_cast<const block_q4_0*>(src), dst, n / qk); break;
    case ggml_type::q4_1: dequantize_q4_1(static_cast<const block_q4_1*>(src), dst, n / qk); break;
    case ggml_type::q4_k: dequantize_q4_k(static_cast<const block_q4_k*>(src), dst, n / qk_k); break;
    case ggml_type::q6_k: dequantize_q6_k(static_cast<const block_q6_k*>(src), dst, n / qk_k); break;
    default: break;
  }
}

void quantize_row(ggml_type type, const float* src, void* dst, std::int64_t n) noexcept {
  switch (type) {
    case ggml_type::f32:
      std::memcpy(dst, src, static_cast<std::size_t>(n) * sizeof(float));
      break;
    case ggml_type::f16:
      for (std::int64_t i = 0; i < n; ++i) static_cast<std::uint16_t*>(dst)[i] = f32_to_f16(src[i]);
      break;
    case ggml_type::bf16:
      for (std::int64_t i = 0; i < n; ++i) static_cast<std::uint16_t*>(dst)[i] = f32_to_bf16(src[i]);
      break;
    case ggml_type::q8_0: quantize_q8_0(src, static_cast<block_q8_0*>(dst), n / qk); break;
    case ggml_type::q4_0: quantize_q4_0(src, static_cast<block_q4_0*>(dst), n / qk); break;
    case ggml_type::q4_1: quantize_q4_1(src, static_cast<block_q4_1*>(dst), n / qk); break;
    case ggml_type::q4_k: quantize_q4_k(src, static_cast<block_q4_k*>(dst), n / qk_k); break;
    case ggml_type::q6_k: quantize_q6_k(src, static_cast<block_q6_k*>(dst), n / qk_k); break;
    default: break;
  }
}

void quantize_q8_row_reference(const float* src, std::byte* dst, std::int64_t n) noexcept {
  auto* qs = reinterpret_cast<std::int8_t*>(dst);
  auto* d = reinterpret_cast<float*>(dst + n);
  float* sums = d + n / qk;
  for (std::int64_t i = 0; i < n / qk; ++i) {
    const float* x = src + i * qk;
    float amax = 0.0f;
    for (int j = 0; j < qk; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float scale = amax / 127.0f;
    const float inverse = amax != 0.0f ? 127.0f / amax : 0.0f;
    int sum = 0;
    for (int j = 0; j < qk; ++j) {
      const int q = round_to_int(x[j] * inverse);
      qs[i * qk + j] = static_cast<std::int8_t>(q);
      sum += q;
    }
    d[i] = scale;
    sums[i] = scale * static_cast<float>(sum);
  }
}

void dequantize_q8_row(const std::byte* src, float* dst, std::int64_t n) noexcept {
  const q8_row_view row = q8_row_view::of(src, n);
  for (std::int64_t i = 0; i < n; ++i) dst[i] = row.d[i / qk] * static_cast<float>(row.qs[i]);
}

}  // namespace chatai::engine::cpu
