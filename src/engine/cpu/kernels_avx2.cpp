// AVX2 kernels (with FMA and F16C): one 32-element block per 256-bit register, integer dot
// products with vpmaddubsw, each weight row unpacked once for up to four activation rows.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "kernels.hpp"
#include "quant_blocks.hpp"

#if defined(__x86_64__) || defined(__i386__)

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")

namespace chatai::engine::cpu {
namespace {

inline float hsum(__m256 v) {
  const __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 b = _mm_add_ps(a, _mm_movehl_ps(a, a));
  return _mm_cvtss_f32(_mm_add_ss(b, _mm_movehdup_ps(b)));
}

// Unsigned bytes times signed bytes, summed in groups of four into 8 int32 lanes.
inline __m256i dot_u8_s8(__m256i u, __m256i s) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

// Signed bytes times signed bytes: |w| * (x with the sign of w).
inline __m256i dot_s8_s8(__m256i w, __m256i x) {
  return dot_u8_s8(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
}

inline __m256i load256(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

// The 32 nibbles of a 16-byte block as values 0..15, in element order.
inline __m256i unpack_nibbles(const std::uint8_t* q) {
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q));
  return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(v, 4), v), _mm256_set1_epi8(0x0f));
}

// The fifth bits of a Q5_0 or Q5_1 block (bit e of qh for element e) as 0x10 in byte e.
inline __m256i fifth_bits(const std::uint8_t* qh) {
  std::uint32_t bits;
  std::memcpy(&bits, qh, sizeof bits);
  const __m256i byte_of_bit = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2,
                                               3, 3, 3, 3, 3, 3, 3, 3);
  const __m256i spread = _mm256_shuffle_epi8(_mm256_set1_epi32(static_cast<int>(bits)), byte_of_bit);
  const __m256i bit = _mm256_set1_epi64x(static_cast<long long>(0x8040201008040201ULL));
  return _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit), _mm256_set1_epi8(0x10));
}

template <int NX>
struct q8_columns {
  q8_row_view rows[NX];
  q8_columns(const std::byte* x, std::size_t x_stride, std::int64_t n) {
    for (int j = 0; j < NX; ++j) rows[j] = q8_row_view::of(x + j * x_stride, n);
  }
};

template <int NX, class Load>
void dot_float(std::int64_t n, Load load, const std::byte* x, std::size_t x_stride, float* out,
               std::size_t out_stride) {
  __m256 acc[NX];
  for (int j = 0; j < NX; ++j) acc[j] = _mm256_setzero_ps();
  std::int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 w = load(i);
    for (int j = 0; j < NX; ++j) {
      const auto* xj = reinterpret_cast<const float*>(x + j * x_stride);
      acc[j] = _mm256_fmadd_ps(w, _mm256_loadu_ps(xj + i), acc[j]);
    }
  }
  for (int j = 0; j < NX; ++j) {
    float sum = hsum(acc[j]);
    if (i < n) {
      alignas(32) float w_tail[8] = {};
      const __m256 w = load(i);
      _mm256_store_ps(w_tail, w);
      const auto* xj = reinterpret_cast<const float*>(x + j * x_stride);
      for (std::int64_t k = i; k < n; ++k) sum += w_tail[k - i] * xj[k];
    }
    out[j * out_stride] = sum;
  }
}

template <int NX>
void dot_f32_n(std::int64_t n, const void* w, const std::byte* x, std::size_t xs, float* out, std::size_t os) {
  const auto* p = static_cast<const float*>(w);
  dot_float<NX>(n, [p, n](std::int64_t i) {
    if (i + 8 <= n) return _mm256_loadu_ps(p + i);
    alignas(32) float tail[8] = {};
    for (std::int64_t k = i; k < n; ++k) tail[k - i] = p[k];
    return _mm256_load_ps(tail);
  }, x, xs, out, os);
}

inline __m128i load_halves(const std::uint16_t* p, std::int64_t i, std::int64_t n) {
  if (i + 8 <= n) return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i));
  alignas(16) std::uint16_t tail[8] = {};
  for (std::int64_t k = i; k < n; ++k) tail[k - i] = p[k];
  return _mm_load_si128(reinterpret_cast<const __m128i*>(tail));
}

template <int NX>
void dot_f16_n(std::int64_t n, const void* w, const std::byte* x, std::size_t xs, float* out, std::size_t os) {
  const auto* p = static_cast<const std::uint16_t*>(w);
  dot_float<NX>(n, [p, n](std::int64_t i) { return _mm256_cvtph_ps(load_halves(p, i, n)); }, x, xs, out, os);
}

template <int NX>
void dot_bf16_n(std::int64_t n, const void* w, const std::byte* x, std::size_t xs, float* out, std::size_t os) {
  const auto* p = static_cast<const std::uint16_t*>(w);
  dot_float<NX>(n, [p, n](std::int64_t i) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(load_halves(p, i, n)), 16));
  }, x, xs, out, os);
}

template <int NX>
void dot_q8_0_n(std::int64_t n, const void* w, const std::byte* x, std::size_t xs, float* out, std::size_t os) {
  const auto* b = static_cast<const block_q8_0*>(w);
  const q8_columns<NX> c(x, xs, n);
  __m256 acc[NX];
  for (int j = 0; j < NX; ++j) acc[j] = _mm256_setzero_ps();
  for (std::int64_t i = 0; i < n / qk; ++i) {
    const __m256i wv = load256(b[i].qs);
    const float dw = f16_to_f32(b[i].d);
    for (int j = 0; j < NX; ++j) {
      const __m256i p = dot_s8_s8(wv, load256(c.rows[j].qs + i * qk));
      acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(dw * c.rows[j].d[i]), acc[j]);
    }
  }
  for (int j = 0; j < NX; ++j) out[j * os] = hsum(acc[j]);
}

template <int NX>
void dot_q4_0_n(std::int64_t n, const void* w, const std::byte* x, std::size_t xs, float* out, std::size_t os) {
  const auto* b = static_cast<const block_q4_0*>(w);
  const q8_columns<NX> c(x, xs, n);
  __m256 acc[NX];
  for (int j = 0; j < NX; ++j) acc[j] = _mm256_setzero_ps();
  for (std::int64_t i = 0; i < n / qk; ++i) {
    const __m256i wv = _mm256_sub_epi8(unpack_nibbles(b[i].qs), _mm256_set1_epi8(8));
    const float dw = f16_to_f32(b[i].d);
    for (int j = 0; j < NX; ++j) {
      const __m256i p = dot_s8_s8(wv, load256(c.rows[j].qs + i * qk));
      acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(dw * c.rows[j].d[i]), acc[j]);
    }
  }
  for (int j = 0; j < NX; ++j) out[j * os] = hsum(acc[j]);
}

template <int NX>
void dot_q4_1_n(std::int64_t n, const void* w, const std::byte* x, std::size_t xs, float* out, std::size_t os) {
  const auto* b = static_cast<const block_q4_1*>(w);
  const q8_columns<NX> c(x, xs, n);
  __m256 acc[NX];
  float offsets[NX] = {};
  for (int j = 0; j < NX; ++j) acc[j] = _mm256_setzero_ps();
  for (std::int64_t i = 0; i < n / qk; ++i) {
    const __m256i wv = unpack_nibbles(b[i].qs);
    const float dw = f16_to_f32(b[i].d);
    const float m = f16_to_f32(b[i].m);
    for (int j = 0; j < NX; ++j) {
      const __m256i p = dot_u8_s8(wv, load256(c.rows[j].qs + i * qk));
      acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(dw * c.rows[j].d[i]), acc[j]);
      offsets[j] += m * c.rows[j].sums[i];
    }
  }
  for (int j = 0; j < NX; ++j) out[j * os] = hsum(acc[j]) + offsets[j];
}

template <int NX>
void dot_q5_0_n(std::int64_t n, const void* w, const std::byte* x, std::size_t xs, float* out, std::size_t os) {
  const auto* b = static_cast<const block_q5_0*>(w);
  const q8_columns<NX> c(x, xs, n);
  __m256 acc[NX];
  for (int j = 0; j < NX; ++j) acc[j] = _mm256_setzero_ps();
  for (std::int64_t i = 0; i < n / qk; ++i) {
    const __m256i levels = _mm256_or_si256(unpack_nibbles(b[i].qs), fifth_bits(b[i].qh));
    const __m256i wv = _mm256_sub_epi8(levels, _mm256_set1_epi8(16));
    const float dw = f16_to_f32(b[i].d);
    for (int j = 0; j < NX; ++j) {
      const __m256i p = dot_s8_s8(wv, load256(c.rows[j].qs + i * qk));
      acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(dw * c.rows[j].d[i]), acc[j]);
    }
  }
  for (int j = 0; j < NX; ++j) out[j * os] = hsum(acc[j]);
}

template <int NX>
void dot_q5_1_n(std::int64_t n, const void* w, const std::byte* x, std::size_t xs, float* out, std::size_t os) {
  const auto* b = static_cast<const block_q5_1*>(w);
  const q8_columns<NX> c(x, xs, n);
  __m256 acc[NX];
  float offsets[NX] = {};
  for (int j = 0; j < NX; ++j) acc[j] = _mm256_setzero_ps();
  for (std::int64_t i = 0; i < n / qk; ++i) {
    const __m256i wv = _mm256_or_si256(unpack_nibbles(b[i].qs), fifth_bits(b[i].qh));
    const float dw = f16_to_f32(b[i].d);
    const float m = f16_to_f32(b[i].m);
    for (int j = 0; j < NX; ++j) {
      const __m256i p = dot_u8_s8(wv, load256(c.rows[j].qs + i * qk));
      acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(dw * c.rows[j].d[i]), acc[j]);
      offsets[j] += m * c.rows[j].sums[i];
    }
  }
  for (int j = 0; j < NX; ++j) out[j * os] = hsum(acc[j]) + offsets[j];
}

// Q4_K and Q5_K, whose fifth bits (qh) are added to the nibbles.
template <int NX, class Block>
void dot_k4_family_n(std::int64_t n, const void* w, const std::byte* x, std::size_t xs, float* out, std::size_t os) {
  constexpr bool fifth_bit = std::is_same_v<Block, block_q5_k>;
  const auto* b = static_cast<const Block*>(w);
  const q8_columns<NX> c(x, xs, n);
  __m256 acc[NX];
  __m256 offsets[NX];
  for (int j = 0; j < NX; ++j) acc[j] = offsets[j] = _mm256_setzero_ps();
  const __m256i low4 = _mm256_set1_epi8(0x0f);
  const __m256i one = _mm256_set1_epi8(1);
  for (std::int64_t i = 0; i < n / qk_k; ++i) {
    const float d = f16_to_f32(b[i].d);
    const float dmin = f16_to_f32(b[i].dmin);
    const std::uint8_t* s = b[i].scales;
    alignas(32) float scales[8];
    alignas(32) float mins[8];
    for (int k = 0; k < 4; ++k) {
      scales[k] = d * static_cast<float>(s[k] & 63);
      mins[k] = dmin * static_cast<float>(s[k + 4] & 63);
      scales[k + 4] = d * static_cast<float>((s[k + 8] & 0x0f) | ((s[k] >> 6) << 4));
      mins[k + 4] = dmin * static_cast<float>((s[k + 8] >> 4) | ((s[k + 4] >> 6) << 4));
    }
    const __m256 min_v = _mm256_load_ps(mins);
    for (int j = 0; j < NX; ++j) offsets[j] = _mm256_fmadd_ps(min_v, _mm256_loadu_ps(c.rows[j].sums + 8 * i), offsets[j]);
    for (int chunk = 0; chunk < 4; ++chunk) {
      const __m256i q = load256(b[i].qs + 32 * chunk);
      __m256i parts[2] = {_mm256_and_si256(q, low4), _mm256_and_si256(_mm256_srli_epi16(q, 4), low4)};
      if constexpr (fifth_bit) {
        const __m256i qh = load256(b[i].qh);
        for (int p = 0; p < 2; ++p) {
          const __m256i high = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * chunk + p), one);
          parts[p] = _mm256_or_si256(parts[p], _mm256_slli_epi16(high, 4));
        }
      }
      for (int p = 0; p < 2; ++p) {
        const std::int64_t k = 8 * i + 2 * chunk + p;  // activation block
        for (int j = 0; j < NX; ++j) {
          const __m256i dot = dot_u8_s8(parts[p], load256(c.rows[j].qs + k * qk));
          acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(scales[2 * chunk + p] * c.rows[j].d[k]), acc[j]);
        }
      }
    }
  }
  for (int j = 0; j < NX; ++j) out[j * os] = hsum(acc[j]) - hsum(offsets[j]);
}

template <int NX>
void dot_q4_k_n(std::int64_t n, const void* w, const std::byte* x, std::size_t xs, float* out, std::size_t os) {
  dot_k4_family_n<NX, block_q4_k>(n, w, x, xs, out, os);
}

template <int NX>
void dot_q5_k_n(std::int64_t n, const void* w, const std::byte* x, std::size_t xs, float* out, std::size_t os) {
  dot_k4_family_n<NX, block_q5_k>(n, w, x, xs, out, os);
}

// Q2_K and Q3_K: each activation block takes the 32 bytes of its 128 elements, shifted to its
// 2-bit field; its two sub-block scales go to the low and high 128-bit lanes.
template <int NX>
void dot_q2_k_n(std::int64_t n, const void* w, const std::byte* x, std::size_t xs, float* out, std::size_t os) {
  const auto* b = static_cast<const block_q2_k*>(w);
  const q8_columns<NX> c(x, xs, n);
  __m256 acc[NX];
  __m256 offsets[NX];
  for (int j = 0; j < NX; ++j) acc[j] = offsets[j] = _mm256_setzero_ps();
  const __m256i low2 = _mm256_set1_epi8(0x03);
  for (std::int64_t i = 0; i < n / qk_k; ++i) {
    const float d = f16_to_f32(b[i].d);
    const float dmin = f16_to_f32(b[i].dmin);
    for (int half = 0; half < 2; ++half) {
      const __m256i q = load256(b[i].qs + 32 * half);
      for (int p = 0; p < 4; ++p) {
        const int block = 4 * half + p;
        const std::uint8_t s0 = b[i].scales[2 * block], s1 = b[i].scales[2 * block + 1];
        const __m256i wv = _mm256_and_si256(_mm256_srli_epi16(q, 2 * p), low2);
        const __m256 ws = _mm256_set_m128(_mm_set1_ps(d * static_cast<float>(s1 & 0x0f)),
                                          _mm_set1_ps(d * static_cast<float>(s0 & 0x0f)));
        const __m256i mins = _mm256_set_m128i(_mm_set1_epi8(static_cast<char>(s1 >> 4)),
                                              _mm_set1_epi8(static_cast<char>(s0 >> 4)));
        const std::int64_t k = 8 * i + block;
        for (int j = 0; j < NX; ++j) {
          const __m256i xv = load256(c.rows[j].qs + k * qk);
          const __m256 dx = _mm256_set1_ps(c.rows[j].d[k]);
          acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot_u8_s8(wv, xv)), _mm256_mul_ps(ws, dx), acc[j]);
          const __m256 m = _mm256_cvtepi32_ps(dot_u8_s8(mins, xv));
          offsets[j] = _mm256_fmadd_ps(m, _mm256_set1_ps(dmin * c.rows[j].d[k]), offsets[j]);
        }
      }
    }
  }
  for (int j = 0; j < NX; ++j) out[j * os] = hsum(acc[j]) - hsum(offsets[j]);
}

// The 16 signed 6-bit sub-block scales of a Q3_K super-block (see q3_k_scale), as bytes.
inline __m128i q3_k_scales(const std::uint8_t* s) {
  const __m128i packed = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(s));
  const __m128i low = _mm_and_si128(_mm_unpacklo_epi64(packed, _mm_srli_epi16(packed, 4)), _mm_set1_epi8(0x0f));
  std::uint32_t high_bytes;
  std::memcpy(&high_bytes, s + 8, sizeof high_bytes);
  const __m128i shifted = _mm_srlv_epi32(_mm_set1_epi32(static_cast<int>(high_bytes)), _mm_setr_epi32(0, 2, 4, 6));
  const __m128i high = _mm_and_si128(shifted, _mm_set1_epi8(0x03));
  return _mm_sub_epi8(_mm_or_si128(low, _mm_slli_epi16(high, 4)), _mm_set1_epi8(32));
}

template <int NX>
void dot_q3_k_n(std::int64_t n, const void* w, const std::byte* x, std::size_t xs, float* out, std::size_t os) {
  const auto* b = static_cast<const block_q3_k*>(w);
  const q8_columns<NX> c(x, xs, n);
  __m256 acc[NX];
  for (int j = 0; j < NX; ++j) acc[j] = _mm256_setzero_ps();
  const __m256i low2 = _mm256_set1_epi8(0x03);
  const __m256i one = _mm256_set1_epi8(1);
  const __m256i bias = _mm256_set1_epi8(4);
  for (std::int64_t i = 0; i < n / qk_k; ++i) {
    const float d = f16_to_f32(b[i].d);
    const __m256i hm = load256(b[i].hmask);
    alignas(16) std::int8_t scales[16];
    _mm_store_si128(reinterpret_cast<__m128i*>(scales), q3_k_scales(b[i].scales));
    for (int half = 0; half < 2; ++half) {
      const __m256i q = load256(b[i].qs + 32 * half);
      for (int p = 0; p < 4; ++p) {
        const int block = 4 * half + p;  // its third bits are bit `block` of hmask
        const __m256i low = _mm256_and_si256(_mm256_srli_epi16(q, 2 * p), low2);
        const __m256i high = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hm, block), one), 2);
        const __m256i wv = _mm256_sub_epi8(_mm256_or_si256(low, high), bias);
        const __m256 ws = _mm256_set_m128(_mm_set1_ps(d * static_cast<float>(scales[2 * block + 1])),
                                          _mm_set1_ps(d * static_cast<float>(scales[2 * block])));
        const std::int64_t k = 8 * i + block;
        for (int j = 0; j < NX; ++j) {
          const __m256i dot = dot_s8_s8(wv, load256(c.rows[j].qs + k * qk));
          acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_mul_ps(ws, _mm256_set1_ps(c.rows[j].d[k])), acc[j]);
        }
      }
    }
  }
  for (int j = 0; j < NX; ++j) out[j * os] = hsum(acc[j]);
}

template <int NX>
void dot_q6_k_n(std::int64_t n, const void* w, const std::byte* x, std::size_t xs, float* out, std::size_t os) {
  const auto* b = static_cast<const block_q6_k*>(w);
  const q8_columns<NX> c(x, xs, n);
  __m256 acc[NX];
  for (int j = 0; j < NX; ++j) acc[j] = _mm256_setzero_ps();
  const __m256i low4 = _mm256_set1_epi8(0x0f);
  const __m256i low2 = _mm256_set1_epi8(0x03);
  const __m256i bias = _mm256_set1_epi8(32);
  for (std::int64_t i = 0; i < n / qk_k; ++i) {
    const float d = f16_to_f32(b[i].d);
    for (int half = 0; half < 2; ++half) {
      const __m256i ql0 = load256(b[i].ql + 64 * half);
      const __m256i ql1 = load256(b[i].ql + 64 * half + 32);
      const __m256i qh = load256(b[i].qh + 32 * half);
      const auto high = [&](int shift) {
        return _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, shift), low2), 4);
      };
      const __m256i parts[4] = {
          _mm256_sub_epi8(_mm256_or_si256(_mm256_and_si256(ql0, low4), high(0)), bias),
          _mm256_sub_epi8(_mm256_or_si256(_mm256_and_si256(ql1, low4), high(2)), bias),
          _mm256_sub_epi8(_mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), low4), high(4)), bias),
          _mm256_sub_epi8(_mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), low4), high(6)), bias),
      };
      for (int p = 0; p < 4; ++p) {
        const int block = 4 * half + p;  // 32-element block within the super-block
        const __m256 ws = _mm256_set_m128(_mm_set1_ps(d * b[i].scales[2 * block + 1]), _mm_set1_ps(d * b[i].scales[2 * block]));
        const std::int64_t k = 8 * i + block;
        for (int j = 0; j < NX; ++j) {
          const __m256i dot = dot_s8_s8(parts[p], load256(c.rows[j].qs + k * qk));
          acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_mul_ps(ws, _mm256_set1_ps(c.rows[j].d[k])), acc[j]);
        }
      }
    }
  }
  for (int j = 0; j < NX; ++j) out[j * os] = hsum(acc[j]);
}

void quantize_q8(const float* src, std::byte* dst, std::int64_t n) {
  auto* qs = reinterpret_cast<std::int8_t*>(dst);
  auto* d = reinterpret_cast<float*>(dst + n);
  float* sums = d + n / qk;
  const __m256 sign_mask = _mm256_set1_ps(-0.0f);
  for (std::int64_t i = 0; i < n / qk; ++i) {
    __m256 v[4];
    __m256 amax_v = _mm256_setzero_ps();
    for (int k = 0; k < 4; ++k) {
      v[k] = _mm256_loadu_ps(src + i * qk + 8 * k);
      amax_v = _mm256_max_ps(amax_v, _mm256_andnot_ps(sign_mask, v[k]));
    }
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(amax_v), _mm256_extractf128_ps(amax_v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    const float amax = _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
    const __m256 inverse = _mm256_set1_ps(amax != 0.0f ? 127.0f / amax : 0.0f);
    __m256i q[4];
    for (int k = 0; k < 4; ++k) q[k] = _mm256_cvtps_epi32(_mm256_mul_ps(v[k], inverse));  // round to nearest even
    const __m256i total = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
    const __m256i packed = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(qs + i * qk),
                        _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
    __m128i t = _mm_add_epi32(_mm256_castsi256_si128(total), _mm256_extracti128_si256(total, 1));
    t = _mm_add_epi32(t, _mm_shuffle_epi32(t, _MM_SHUFFLE(1, 0, 3, 2)));
    t = _mm_add_epi32(t, _mm_shuffle_epi32(t, _MM_SHUFFLE(2, 3, 0, 1)));
    d[i] = amax / 127.0f;
    sums[i] = d[i] * static_cast<float>(_mm_cvtsi128_si32(t));
  }
}

#define CHATAI_COLUMN_DISPATCH(name)                                                                  \
  void name(std::int64_t n, const void* w, const std::byte* x, std::size_t xs, int n_columns,        \
            float* out, std::size_t os) {                                                            \
    switch (n_columns) {                                                                             \
      case 1: name##_n<1>(n, w, x, xs, out, os); break;                                              \
      case 2: name##_n<2>(n, w, x, xs, out, os); break;                                              \
      case 3: name##_n<3>(n, w, x, xs, out, os); break;                                              \
      default: name##_n<4>(n, w, x, xs, out, os); break;                                             \
    }                                                                                                \
  }

CHATAI_COLUMN_DISPATCH(dot_f32)
CHATAI_COLUMN_DISPATCH(dot_f16)
CHATAI_COLUMN_DISPATCH(dot_bf16)
CHATAI_COLUMN_DISPATCH(dot_q8_0)
CHATAI_COLUMN_DISPATCH(dot_q4_0)
CHATAI_COLUMN_DISPATCH(dot_q4_1)
CHATAI_COLUMN_DISPATCH(dot_q5_0)
CHATAI_COLUMN_DISPATCH(dot_q5_1)
CHATAI_COLUMN_DISPATCH(dot_q2_k)
CHATAI_COLUMN_DISPATCH(dot_q3_k)
CHATAI_COLUMN_DISPATCH(dot_q4_k)
CHATAI_COLUMN_DISPATCH(dot_q5_k)
CHATAI_COLUMN_DISPATCH(dot_q6_k)
#undef CHATAI_COLUMN_DISPATCH

// Lanes below `count` set, for masked loads and stores.
inline __m256i first_lanes(std::int64_t count) {
  const auto c = static_cast<int>(std::clamp<std::int64_t>(count, 0, 8));
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(c), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// e^x for x <= 0 (softmax arguments less their maximum), to a few units in the last place:
// x = n ln 2 + r with |r| <= ln 2 / 2, e^r by its degree-6 polynomial, 2^n by the exponent bits.
// Below -87 the result is about 1e-38 instead of less: nothing beside the maximum's 1.
inline __m256 exp_nonpositive(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  const __m256 y = _mm256_add_ps(_mm256_fmadd_ps(_mm256_mul_ps(p, r), r, r), _mm256_set1_ps(1.0f));
  const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(bits));
}

// scores[j] = e^(scores[j] - max) for j < n; returns their sum.
inline float softmax_numerators(float* scores, std::int64_t n) {
  __m256 top = _mm256_set1_ps(-INFINITY);
  std::int64_t j = 0;
  for (; j + 8 <= n; j += 8) top = _mm256_max_ps(top, _mm256_loadu_ps(scores + j));
  float max = -INFINITY;
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, top);
  for (const float v : lanes) max = std::max(max, v);
  for (std::int64_t i = j; i < n; ++i) max = std::max(max, scores[i]);
  const __m256 m = _mm256_set1_ps(max);
  __m256 total = _mm256_setzero_ps();
  for (j = 0; j + 8 <= n; j += 8) {
    const __m256 e = exp_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(scores + j), m));
    _mm256_storeu_ps(scores + j, e);
    total = _mm256_add_ps(total, e);
  }
  float sum = hsum(total);
  for (; j < n; ++j) {
    scores[j] = std::exp(scores[j] - max);
    sum += scores[j];
  }
  return sum;
}

void soft_cap(float* scores, std::int64_t n, float cap);
void attend(std::int64_t head_dim, const float* q, const kv_columns& keys, const kv_rows& values, std::int64_t first,
            std::int64_t n, float scale, float softcap, float* scores, float* out);

// A page at a time for every query of the tile: its 16 scores in two vectors (as attend), the
// online softmax's maximum and sum updated, the output rescaled and the page's weighted values
// added while the page is in cache.
void attend_tile(std::int64_t head_dim, const tile_query* queries, std::int64_t count, const kv_columns& keys,
                 const kv_rows& values, float scale, float softcap, float* scratch) {
  if (keys.page_rows != 16) return attend_each(attend, head_dim, queries, count, keys, values, scale, softcap, scratch);
  tile_state state(head_dim, queries, count, scratch);
  float* run_max = state.run_max;
  float* run_sum = state.run_sum;
  const __m256 s = _mm256_set1_ps(scale);
  const __m256i index_lo = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), index_hi = _mm256_setr_epi32(8, 9, 10, 11, 12, 13, 14, 15);
  alignas(32) float p[16];
  for (std::int64_t pg = state.first / 16, j0 = pg * 16; j0 < state.end; ++pg, j0 += 16) {
    const float* base = keys.pages[pg] + keys.offset;
    const float* rows = values.pages[pg] + values.offset;  // row r at rows + r * values.stride
    for (std::int64_t qi = 0; qi < count; ++qi) {
      const tile_query& t = queries[qi];
      if (j0 >= t.n || j0 + 16 <= t.first) continue;
      __m256 lo_acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()}, hi_acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
      std::int64_t i = 0;
      for (; i + 2 <= head_dim; i += 2) {
        for (int u = 0; u < 2; ++u) {
          const __m256 qv = _mm256_broadcast_ss(t.q + i + u);
          lo_acc[u] = _mm256_fmadd_ps(qv, _mm256_loadu_ps(base + (i + u) * 16), lo_acc[u]);
          hi_acc[u] = _mm256_fmadd_ps(qv, _mm256_loadu_ps(base + (i + u) * 16 + 8), hi_acc[u]);
        }
      }
      for (; i < head_dim; ++i) {
        const __m256 qv = _mm256_broadcast_ss(t.q + i);
        lo_acc[0] = _mm256_fmadd_ps(qv, _mm256_loadu_ps(base + i * 16), lo_acc[0]);
        hi_acc[0] = _mm256_fmadd_ps(qv, _mm256_loadu_ps(base + i * 16 + 8), hi_acc[0]);
      }
      _mm256_store_ps(p, _mm256_mul_ps(_mm256_add_ps(lo_acc[0], lo_acc[1]), s));
      _mm256_store_ps(p + 8, _mm256_mul_ps(_mm256_add_ps(hi_acc[0], hi_acc[1]), s));
      if (softcap > 0.0f) soft_cap(p, 16, softcap);
      const std::int64_t r_begin = std::max<std::int64_t>(t.first - j0, 0), r_end = std::min<std::int64_t>(t.n - j0, 16);
      float page_max = -INFINITY;
      for (std::int64_t r = r_begin; r < r_end; ++r) page_max = std::max(page_max, p[r]);
      const float new_max = std::max(run_max[qi], page_max);
      const float factor = run_max[qi] == -INFINITY ? 0.0f : std::exp(run_max[qi] - new_max);
      const __m256 m = _mm256_set1_ps(new_max);
      const __m256i b = _mm256_set1_epi32(static_cast<int>(r_begin)), e_ = _mm256_set1_epi32(static_cast<int>(r_end));
      const auto valid = [&](__m256i index) {  // r_begin <= index < r_end
        return _mm256_castsi256_ps(_mm256_andnot_si256(_mm256_cmpgt_epi32(b, index), _mm256_cmpgt_epi32(e_, index)));
      };
      const __m256 e0 = _mm256_and_ps(exp_nonpositive(_mm256_sub_ps(_mm256_load_ps(p), m)), valid(index_lo));
      const __m256 e1 = _mm256_and_ps(exp_nonpositive(_mm256_sub_ps(_mm256_load_ps(p + 8), m)), valid(index_hi));
      run_sum[qi] = run_sum[qi] * factor + hsum(_mm256_add_ps(e0, e1));
      run_max[qi] = new_max;
      _mm256_store_ps(p, e0);
      _mm256_store_ps(p + 8, e1);
      const __m256 f = _mm256_set1_ps(factor);
      for (std::int64_t c = 0; c < head_dim; c += 8) {
        const __m256i lanes = first_lanes(head_dim - c);
        __m256 a = _mm256_mul_ps(_mm256_maskload_ps(t.out + c, lanes), f);
        __m256 a2 = _mm256_setzero_ps();
        std::int64_t r = r_begin;
        for (; r + 1 < r_end; r += 2) {
          a = _mm256_fmadd_ps(_mm256_set1_ps(p[r]), _mm256_maskload_ps(rows + r * values.stride + c, lanes), a);
          a2 = _mm256_fmadd_ps(_mm256_set1_ps(p[r + 1]), _mm256_maskload_ps(rows + (r + 1) * values.stride + c, lanes), a2);
        }
        if (r < r_end) a = _mm256_fmadd_ps(_mm256_set1_ps(p[r]), _mm256_maskload_ps(rows + r * values.stride + c, lanes), a);
        _mm256_maskstore_ps(t.out + c, lanes, _mm256_add_ps(a, a2));
      }
    }
  }
  state.finish(head_dim, queries, count);
}

float softmax(float* x, std::int64_t n, float scale) {
  __m256 top = _mm256_set1_ps(-INFINITY);
  std::int64_t j = 0;
  for (; j + 8 <= n; j += 8) top = _mm256_max_ps(top, _mm256_loadu_ps(x + j));
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, top);
  float max = -INFINITY;
  for (const float v : lanes) max = std::max(max, v);
  for (std::int64_t i = j; i < n; ++i) max = std::max(max, x[i]);
  const __m256 m = _mm256_set1_ps(max), s = _mm256_set1_ps(scale), floor = _mm256_set1_ps(-87.0f);
  __m256 total = _mm256_setzero_ps();
  for (j = 0; j + 8 <= n; j += 8) {
    const __m256 a = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + j), m), s);
    const __m256 e = _mm256_and_ps(exp_nonpositive(a), _mm256_cmp_ps(a, floor, _CMP_GE_OQ));
    _mm256_storeu_ps(x + j, e);
    total = _mm256_add_ps(total, e);
  }
  float sum = hsum(total);
  for (; j < n; ++j) {
    const float a = (x[j] - max) * scale;
    x[j] = a >= -87.0f ? std::exp(a) : 0.0f;
    sum += x[j];
  }
  return sum;
}

// e = e^(-|x|) for the logistic function and tanh: sigmoid(x) = 1 / (1 + e) for x >= 0 and
// e / (1 + e) below; tanh(|y|) = (1 - e') / (1 + e') with e' = e^(-2|y|).
void swiglu(float* gate, const float* up, std::int64_t n) {
  const __m256 one = _mm256_set1_ps(1.0f), sign = _mm256_set1_ps(-0.0f);
  std::int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 x = _mm256_loadu_ps(gate + i);
    const __m256 e = exp_nonpositive(_mm256_or_ps(x, sign));  // e^(-|x|)
    const __m256 inv = _mm256_div_ps(one, _mm256_add_ps(one, e));
    const __m256 sig = _mm256_blendv_ps(inv, _mm256_mul_ps(e, inv), x);  // the sign bit picks e / (1 + e)
    _mm256_storeu_ps(gate + i, _mm256_mul_ps(_mm256_mul_ps(x, sig), _mm256_loadu_ps(up + i)));
  }
  for (; i < n; ++i) gate[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

void geglu(float* gate, const float* up, std::int64_t n) {
  const __m256 one = _mm256_set1_ps(1.0f), half = _mm256_set1_ps(0.5f), sign = _mm256_set1_ps(-0.0f);
  const __m256 c = _mm256_set1_ps(0.7978845608028654f), k = _mm256_set1_ps(0.044715f), m2 = _mm256_set1_ps(-2.0f);
  std::int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 x = _mm256_loadu_ps(gate + i);
    const __m256 y = _mm256_mul_ps(c, _mm256_fmadd_ps(_mm256_mul_ps(k, x), _mm256_mul_ps(x, x), x));
    const __m256 e = exp_nonpositive(_mm256_mul_ps(m2, _mm256_andnot_ps(sign, y)));
    const __m256 t = _mm256_or_ps(_mm256_div_ps(_mm256_sub_ps(one, e), _mm256_add_ps(one, e)), _mm256_and_ps(sign, y));
    const __m256 g = _mm256_mul_ps(_mm256_mul_ps(half, x), _mm256_add_ps(one, t));
    _mm256_storeu_ps(gate + i, _mm256_mul_ps(g, _mm256_loadu_ps(up + i)));
  }
  for (; i < n; ++i) {
    const float x = gate[i];
    gate[i] = 0.5f * x * (1.0f + std::tanh(0.7978845608028654f * (x + 0.044715f * x * x * x))) * up[i];
  }
}

// Scores a position at a time; the weighted values in 32-float slices of the head, held in
// registers over all positions.
// scores[j] = cap * tanh(scores[j] / cap) for j < n: tanh(y) = sign(y) (1 - e) / (1 + e) with
// e = e^(-2|y|).
void soft_cap(float* scores, std::int64_t n, float cap) {
  const __m256 c = _mm256_set1_ps(cap), inv = _mm256_set1_ps(-2.0f / cap), sign = _mm256_set1_ps(-0.0f);
  const __m256 one = _mm256_set1_ps(1.0f);
  std::int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256 x = _mm256_loadu_ps(scores + j);
    const __m256 e = exp_nonpositive(_mm256_mul_ps(_mm256_andnot_ps(sign, x), inv));
    const __m256 t = _mm256_div_ps(_mm256_sub_ps(one, e), _mm256_add_ps(one, e));
    _mm256_storeu_ps(scores + j, _mm256_or_ps(_mm256_mul_ps(c, t), _mm256_and_ps(sign, x)));
  }
  for (; j < n; ++j) scores[j] = cap * std::tanh(scores[j] / cap);
}

void attend(std::int64_t head_dim, const float* q, const kv_columns& keys, const kv_rows& values, std::int64_t first,
            std::int64_t n, float scale, float softcap, float* scores, float* out) {
  if (keys.page_rows == 16) {
    // A page's 16 scores in two vectors: per dimension, one broadcast of q times that
    // dimension of the 16 keys; four pairs of sums in flight.
    for (std::int64_t p = first / 16, j0 = p * 16; j0 < n; j0 += 16, ++p) {
      const float* base = keys.pages[p] + keys.offset;
      __m256 lo[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
      __m256 hi[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
      std::int64_t i = 0;
      for (; i + 4 <= head_dim; i += 4) {
        for (int u = 0; u < 4; ++u) {
          const __m256 qi = _mm256_broadcast_ss(q + i + u);
          const float* column = base + (i + u) * 16;
          lo[u] = _mm256_fmadd_ps(qi, _mm256_loadu_ps(column), lo[u]);
          hi[u] = _mm256_fmadd_ps(qi, _mm256_loadu_ps(column + 8), hi[u]);
        }
      }
      for (; i < head_dim; ++i) {
        const __m256 qi = _mm256_broadcast_ss(q + i);
        lo[0] = _mm256_fmadd_ps(qi, _mm256_loadu_ps(base + i * 16), lo[0]);
        hi[0] = _mm256_fmadd_ps(qi, _mm256_loadu_ps(base + i * 16 + 8), hi[0]);
      }
      const __m256 s = _mm256_set1_ps(scale);
      const __m256 a = _mm256_mul_ps(_mm256_add_ps(_mm256_add_ps(lo[0], lo[1]), _mm256_add_ps(lo[2], lo[3])), s);
      const __m256 b = _mm256_mul_ps(_mm256_add_ps(_mm256_add_ps(hi[0], hi[1]), _mm256_add_ps(hi[2], hi[3])), s);
      // The scratch holds whole pages: lanes past n are written and never read.
      _mm256_storeu_ps(scores + j0, a);
      _mm256_storeu_ps(scores + j0 + 8, b);
    }
  } else {
    score_columns(head_dim, q, keys, first, n, scale, scores);
  }
  if (softcap > 0.0f) soft_cap(scores + first, n - first, softcap);
  const float sum = softmax_numerators(scores + first, n - first);
  const __m256 inverse = _mm256_set1_ps(1.0f / sum);
  for (std::int64_t c = 0; c < head_dim; c += 32) {
    const __m256i mask[4] = {first_lanes(head_dim - c), first_lanes(head_dim - c - 8), first_lanes(head_dim - c - 16),
                             first_lanes(head_dim - c - 24)};
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    __m256 odd[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for_each_row_pair(
        values, first, n,
        [&](std::int64_t j, const float* row, const float* next) {
          const __m256 p = _mm256_set1_ps(scores[j]), p1 = _mm256_set1_ps(scores[j + 1]);
          for (int u = 0; u < 4; ++u) {
            acc[u] = _mm256_fmadd_ps(p, _mm256_maskload_ps(row + c + 8 * u, mask[u]), acc[u]);
            odd[u] = _mm256_fmadd_ps(p1, _mm256_maskload_ps(next + c + 8 * u, mask[u]), odd[u]);
          }
        },
        [&](std::int64_t j, const float* row) {
          const __m256 p = _mm256_set1_ps(scores[j]);
          for (int u = 0; u < 4; ++u) acc[u] = _mm256_fmadd_ps(p, _mm256_maskload_ps(row + c + 8 * u, mask[u]), acc[u]);
        });
    for (int u = 0; u < 4; ++u)
      _mm256_maskstore_ps(out + c + 8 * u, mask[u], _mm256_mul_ps(_mm256_add_ps(acc[u], odd[u]), inverse));
  }
}

}  // namespace

const kernel_table& avx2_kernels() noexcept {
  static const kernel_table table{cpu_isa::avx2, dot_f32, dot_f16, dot_bf16, dot_q8_0, dot_q4_0,
                                  dot_q4_1, dot_q5_0, dot_q5_1, dot_q2_k, dot_q3_k, dot_q4_k,
                                  dot_q5_k, dot_q6_k, quantize_q8, attend, attend_tile, softmax, soft_cap, swiglu, geglu};
  return table;
}

}  // namespace chatai::engine::cpu

#pragma GCC pop_options

#endif
