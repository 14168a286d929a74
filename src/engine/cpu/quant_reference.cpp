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

void dequantize_q5_0(const block_q5_0* b, float* y, std::int64_t nb) {
  for (std::int64_t i = 0; i < nb; ++i, y += qk) {
    const float d = f16_to_f32(b[i].d);
    int q[qk];
    q5_levels(b[i], q);
    for (int j = 0; j < qk; ++j) y[j] = d * static_cast<float>(q[j] - 16);
  }
}

void dequantize_q5_1(const block_q5_1* b, float* y, std::int64_t nb) {
  for (std::int64_t i = 0; i < nb; ++i, y += qk) {
    const float d = f16_to_f32(b[i].d);
    const float m = f16_to_f32(b[i].m);
    int q[qk];
    q5_levels(b[i], q);
    for (int j = 0; j < qk; ++j) y[j] = d * static_cast<float>(q[j]) + m;
  }
}

void dequantize_q8_0(const block_q8_0* b, float* y, std::int64_t nb) {
  for (std::int64_t i = 0; i < nb; ++i, y += qk) {
    const float d = f16_to_f32(b[i].d);
    for (int j = 0; j < qk; ++j) y[j] = d * static_cast<float>(b[i].qs[j]);
  }
}

void dequantize_q4_k(const block_q4_k* b, float* y, std::int64_t nb) {
  for (std::int64_t i = 0; i < nb; ++i) {
    const float d = f16_to_f32(b[i].d);
    const float dmin = f16_to_f32(b[i].dmin);
    const std::uint8_t* q = b[i].qs;
    for (int j = 0; j < 8; j += 2, q += 32) {
      int sc0, m0, sc1, m1;
      k4_scale_min(b[i].scales, j, sc0, m0);
      k4_scale_min(b[i].scales, j + 1, sc1, m1);
      for (int l = 0; l < 32; ++l) *y++ = d * static_cast<float>(sc0) * static_cast<float>(q[l] & 0x0f) - dmin * static_cast<float>(m0);
      for (int l = 0; l < 32; ++l) *y++ = d * static_cast<float>(sc1) * static_cast<float>(q[l] >> 4) - dmin * static_cast<float>(m1);
    }
  }
}

void dequantize_q2_k(const block_q2_k* b, float* y, std::int64_t nb) {
  for (std::int64_t i = 0; i < nb; ++i, y += qk_k) {
    const float d = f16_to_f32(b[i].d);
    const float dmin = f16_to_f32(b[i].dmin);
    for (int e = 0; e < qk_k; ++e) {
      const int n = e / 128, j = (e % 128) / 32, l = e % 32;
      const int q = (b[i].qs[32 * n + l] >> (2 * j)) & 3;
      const std::uint8_t sc = b[i].scales[e / 16];
      y[e] = d * static_cast<float>(sc & 0x0f) * static_cast<float>(q) - dmin * static_cast<float>(sc >> 4);
    }
  }
}

void dequantize_q3_k(const block_q3_k* b, float* y, std::int64_t nb) {
  for (std::int64_t i = 0; i < nb; ++i, y += qk_k) {
    const float d = f16_to_f32(b[i].d);
    for (int e = 0; e < qk_k; ++e) {
      const int n = e / 128, j = (e % 128) / 32, l = e % 32;
      const int low = (b[i].qs[32 * n + l] >> (2 * j)) & 3;
      const int high = (b[i].hmask[l] >> (4 * n + j)) & 1;
      y[e] = d * static_cast<float>(q3_k_scale(b[i].scales, e / 16)) * static_cast<float>(low + 4 * high - 4);
    }
  }
}

void dequantize_q5_k(const block_q5_k* b, float* y, std::int64_t nb) {
  for (std::int64_t i = 0; i < nb; ++i) {
    const float d = f16_to_f32(b[i].d);
    const float dmin = f16_to_f32(b[i].dmin);
    for (int j = 0; j < 8; ++j) {
      int sc, m;
      k4_scale_min(b[i].scales, j, sc, m);
      const std::uint8_t* q = b[i].qs + 32 * (j / 2);
      for (int l = 0; l < 32; ++l) {
        const int v = ((q[l] >> (4 * (j % 2))) & 0x0f) | (((b[i].qh[l] >> j) & 1) << 4);
        *y++ = d * static_cast<float>(sc) * static_cast<float>(v) - dmin * static_cast<float>(m);
      }
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

// The 5-bit types: Q4_0's and Q4_1's rules with 32 levels; the fifth bits gathered into qh.
template <class Block>
void store_5_bit(const int (&q)[qk], Block& b) {
  std::uint32_t qh = 0;
  for (int j = 0; j < qk / 2; ++j) {
    b.qs[j] = static_cast<std::uint8_t>((q[j] & 0x0f) | ((q[j + qk / 2] & 0x0f) << 4));
    qh |= static_cast<std::uint32_t>(q[j] >> 4) << j;
    qh |= static_cast<std::uint32_t>(q[j + qk / 2] >> 4) << (j + qk / 2);
  }
  std::memcpy(b.qh, &qh, sizeof qh);
}

void quantize_q5_0(const float* x, block_q5_0* b, std::int64_t nb) {
  for (std::int64_t i = 0; i < nb; ++i, x += qk) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < qk; ++j) {
      if (std::fabs(x[j]) > amax) {
        amax = std::fabs(x[j]);
        max = x[j];
      }
    }
    const float d = max / -16.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    b[i].d = f32_to_f16(d);
    int q[qk];
    for (int j = 0; j < qk; ++j) q[j] = std::min(31, static_cast<int>(x[j] * id + 16.5f));
    store_5_bit(q, b[i]);
  }
}

void quantize_q5_1(const float* x, block_q5_1* b, std::int64_t nb) {
  for (std::int64_t i = 0; i < nb; ++i, x += qk) {
    const auto [lo, hi] = std::minmax_element(x, x + qk);
    const float d = (*hi - *lo) / 31.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    b[i].d = f32_to_f16(d);
    b[i].m = f32_to_f16(*lo);
    int q[qk];
    for (int j = 0; j < qk; ++j) q[j] = std::min(31, static_cast<int>((x[j] - *lo) * id + 0.5f));
    store_5_bit(q, b[i]);
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

// Q4_K and Q5_K: 8 sub-blocks of 32 with `top` + 1 levels from their range, 6-bit scales and
// mins; the low 4 bits of each level as nibbles, Q5_K's fifth in qh.
template <class Block, int top>
void quantize_k4_family(const float* x, Block* b, std::int64_t nb) {
  for (std::int64_t i = 0; i < nb; ++i, x += qk_k) {
    float scales[8], mins[8];
    for (int j = 0; j < 8; ++j) {
      const float* s = x + 32 * j;
      const float lo = std::min(0.0f, *std::min_element(s, s + 32));
      const float hi = *std::max_element(s, s + 32);
      scales[j] = (hi - lo) / static_cast<float>(top);
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
        levels[32 * j + l] = static_cast<std::uint8_t>(std::clamp(q, 0, top));
      }
    }
    for (int j = 0; j < 4; ++j) {
      for (int l = 0; l < 32; ++l) {
        const int low = levels[64 * j + l] & 0x0f, high = levels[64 * j + 32 + l] & 0x0f;
        b[i].qs[32 * j + l] = static_cast<std::uint8_t>(low | (high << 4));
      }
    }
    if constexpr (top == 31) {
      std::memset(b[i].qh, 0, sizeof b[i].qh);
      for (int e = 0; e < qk_k; ++e) b[i].qh[e % 32] |= static_cast<std::uint8_t>((levels[e] >> 4) << (e / 32));
    }
  }
}

// The 2-bit fields of Q2_K and Q3_K: element 128 n + 32 j + l in bits 2 j of qs[32 n + l].
void store_2_bit(const std::uint8_t* levels, std::uint8_t* qs) {
  std::memset(qs, 0, qk_k / 4);
  for (int e = 0; e < qk_k; ++e) {
    qs[32 * (e / 128) + e % 32] |= static_cast<std::uint8_t>((levels[e] & 3) << (2 * ((e % 128) / 32)));
  }
}

// Fits x[i] ~ scale * q[i] - min over n values, q in [0, top] and min >= 0, minimizing the
// squared error: the range's step and steps near it, each refined by a least-squares fit of
// scale and min to its levels (the search of ggml's 2-bit quantizer, whose four levels the
// range alone spreads too thinly). Returns the scale; `min` gets the min.
float fit_scale_min(const float* x, int n, int top, float& min) {
  const float lo = std::min(0.0f, *std::min_element(x, x + n));
  const float hi = *std::max_element(x, x + n);
  min = -lo;
  if (hi <= lo) return 0.0f;
  float best_scale = (hi - lo) / static_cast<float>(top), best_error = INFINITY;
  for (int step = -1; step <= 15; ++step) {
    // step -1: the range's own step; then (top - 0.5 + 0.1 step) levels over the range.
    const float widen = step < 0 ? 0.0f : -0.5f + 0.1f * static_cast<float>(step);
    const float inverse = (static_cast<float>(top) + widen) / (hi - lo);
    float sl = 0, sl2 = 0, sxl = 0, sx = 0;
    int levels[qk];
    for (int i = 0; i < n; ++i) {
      levels[i] = std::clamp(round_to_int(inverse * (x[i] - lo)), 0, top);
      const auto l = static_cast<float>(levels[i]);
      sl += l;
      sl2 += l * l;
      sxl += l * x[i];
      sx += x[i];
    }
    const float det = static_cast<float>(n) * sl2 - sl * sl;
    if (det <= 0) continue;
    float scale = (static_cast<float>(n) * sxl - sx * sl) / det;
    float offset = (sl2 * sx - sl * sxl) / det;  // -min
    if (offset > 0) {
      offset = 0;
      scale = sxl / sl2;
    }
    float error = 0;
    for (int i = 0; i < n; ++i) {
      const float e = scale * static_cast<float>(levels[i]) + offset - x[i];
      error += e * e;
    }
    if (error < best_error) {
      best_error = error;
      best_scale = scale;
      min = -offset;
    }
  }
  return best_scale;
}

// 16 sub-blocks of 16 with 4 levels each, fitted by fit_scale_min; 4-bit scales and mins
// of the super-block's largest ones.
void quantize_q2_k(const float* x, block_q2_k* b, std::int64_t nb) {
  for (std::int64_t i = 0; i < nb; ++i, x += qk_k) {
    float scales[16], mins[16];
    for (int j = 0; j < 16; ++j) scales[j] = fit_scale_min(x + 16 * j, 16, 3, mins[j]);
    b[i].d = f32_to_f16(*std::max_element(scales, scales + 16) / 15.0f);
    b[i].dmin = f32_to_f16(*std::max_element(mins, mins + 16) / 15.0f);
    const float d_stored = f16_to_f32(b[i].d);
    const float dmin_stored = f16_to_f32(b[i].dmin);
    std::uint8_t levels[qk_k];
    for (int j = 0; j < 16; ++j) {
      const int sc = std::clamp(d_stored > 0 ? round_to_int(scales[j] / d_stored) : 0, 0, 15);
      const int mn = std::clamp(dmin_stored > 0 ? round_to_int(mins[j] / dmin_stored) : 0, 0, 15);
      b[i].scales[j] = static_cast<std::uint8_t>(sc | (mn << 4));
      const float step = d_stored * static_cast<float>(sc);
      const float offset = dmin_stored * static_cast<float>(mn);
      for (int l = 0; l < 16; ++l) {
        const int q = step > 0 ? round_to_int((x[16 * j + l] + offset) / step) : 0;
        levels[16 * j + l] = static_cast<std::uint8_t>(std::clamp(q, 0, 3));
      }
    }
    store_2_bit(levels, b[i].qs);
  }
}

// Q6_K's rule with 8 levels and 6-bit scales.
void quantize_q3_k(const float* x, block_q3_k* b, std::int64_t nb) {
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
      scales[j] = max / -4.0f;
      if (std::fabs(scales[j]) > max_abs_scale) {
        max_abs_scale = std::fabs(scales[j]);
        max_scale = scales[j];
      }
    }
    b[i].d = f32_to_f16(max_scale / -32.0f);
    const float d_stored = f16_to_f32(b[i].d);
    std::memset(b[i].scales, 0, sizeof b[i].scales);
    std::memset(b[i].hmask, 0, sizeof b[i].hmask);
    std::uint8_t levels[qk_k];
    for (int j = 0; j < 16; ++j) {
      const int sc = d_stored != 0.0f ? std::clamp(round_to_int(scales[j] / d_stored), -32, 31) : 0;
      const int stored = sc + 32;
      b[i].scales[j % 8] |= static_cast<std::uint8_t>((stored & 0x0f) << (4 * (j / 8)));
      b[i].scales[8 + j % 4] |= static_cast<std::uint8_t>((stored >> 4) << (2 * (j / 4)));
      const float step = d_stored * static_cast<float>(sc);
      for (int l = 0; l < 16; ++l) {
        const int q = step != 0.0f ? round_to_int(x[16 * j + l] / step) : 0;
        levels[16 * j + l] = static_cast<std::uint8_t>(std::clamp(q, -4, 3) + 4);
      }
    }
    store_2_bit(levels, b[i].qs);
    for (int e = 0; e < qk_k; ++e) {
      b[i].hmask[e % 32] |= static_cast<std::uint8_t>((levels[e] >> 2) << (4 * (e / 128) + (e % 128) / 32));
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
    case ggml_type::q5_0:
    case ggml_type::q5_1:
    case ggml_type::q2_k:
    case ggml_type::q3_k:
    case ggml_type::q4_k:
    case ggml_type::q5_k:
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
    case ggml_type::q5_0: dequantize_q5_0(static_cast<const block_q5_0*>(src), dst, n / qk); break;
    case ggml_type::q5_1: dequantize_q5_1(static_cast<const block_q5_1*>(src), dst, n / qk); break;
    case ggml_type::q2_k: dequantize_q2_k(static_cast<const block_q2_k*>(src), dst, n / qk_k); break;
    case ggml_type::q3_k: dequantize_q3_k(static_cast<const block_q3_k*>(src), dst, n / qk_k); break;
    case ggml_type::q4_k: dequantize_q4_k(static_cast<const block_q4_k*>(src), dst, n / qk_k); break;
    case ggml_type::q5_k: dequantize_q5_k(static_cast<const block_q5_k*>(src), dst, n / qk_k); break;
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
    case ggml_type::q5_0: quantize_q5_0(src, static_cast<block_q5_0*>(dst), n / qk); break;
    case ggml_type::q5_1: quantize_q5_1(src, static_cast<block_q5_1*>(dst), n / qk); break;
    case ggml_type::q2_k: quantize_q2_k(src, static_cast<block_q2_k*>(dst), n / qk_k); break;
    case ggml_type::q3_k: quantize_q3_k(src, static_cast<block_q3_k*>(dst), n / qk_k); break;
    case ggml_type::q4_k: quantize_k4_family<block_q4_k, 15>(src, static_cast<block_q4_k*>(dst), n / qk_k); break;
    case ggml_type::q5_k: quantize_k4_family<block_q5_k, 31>(src, static_cast<block_q5_k*>(dst), n / qk_k); break;
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
