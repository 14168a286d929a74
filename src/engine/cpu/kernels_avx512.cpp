// AVX-512 kernels (F, BW, VL, VNNI): two 32-element blocks per 512-bit register, integer
// dot products with vpdpbusd, each weight row unpacked once for up to four activation rows.
// GCC 12's AVX-512 headers trip its own uninitialized-value warnings (GCC bug 105593).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include "kernels.hpp"
#include "quant_blocks.hpp"

#if defined(__x86_64__) || defined(__i386__)

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")

namespace chatai::engine::cpu {
namespace {

// Lanes 0..7 take element 0 of a vector, lanes 8..15 element 1: one scale per 32-element block.
inline __m512i pair_index(int first) {
  return _mm512_setr_epi32(first, first, first, first, first, first, first, first, first + 1, first + 1,
                           first + 1, first + 1, first + 1, first + 1, first + 1, first + 1);
}

// Lanes 4k..4k+3 take element first + k: one scale per 16-element group.
inline __m512i quad_index(int first) {
  return _mm512_setr_epi32(first, first, first, first, first + 1, first + 1, first + 1, first + 1, first + 2,
                           first + 2, first + 2, first + 2, first + 3, first + 3, first + 3, first + 3);
}

// Two consecutive floats, spread over the lanes of two blocks.
inline __m512 load_pair(const float* p) {
  const __m512 v = _mm512_zextps128_ps512(_mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double*>(p))));
  return _mm512_permutexvar_ps(pair_index(0), v);
}

inline __m512 make_pair(float a, float b) {
  return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castps_pd(_mm512_set1_ps(a)),
                                             _mm256_castps_pd(_mm256_set1_ps(b)), 1));
}

// Signed weights times signed activations: |w| * (x with the sign of w), for vpdpbusd.
inline __m512i signed_dot(__m512i w_abs, __mmask64 w_negative, __m512i x) {
  const __m512i x_signed = _mm512_mask_sub_epi8(x, w_negative, _mm512_setzero_si512(), x);
  return _mm512_dpbusd_epi32(_mm512_setzero_si512(), w_abs, x_signed);
}

// Streams of activation rows for one call.
template <int NX>
struct q8_columns {
  q8_row_view rows[NX];
  q8_columns(const std::byte* x, std::size_t x_stride, std::int64_t n) {
    for (int j = 0; j < NX; ++j) rows[j] = q8_row_view::of(x + j * x_stride, n);
  }
};

template <int NX>
void store(const __m512 (&acc)[NX], float* out, std::size_t out_stride) {
  for (int j = 0; j < NX; ++j) out[j * out_stride] = _mm512_reduce_add_ps(acc[j]);
}

// ---- float weights, f32 activations ----

struct f16_tag {};
struct bf16_tag {};

inline __m512 load_half(const std::uint16_t* p, __mmask16 mask, f16_tag) {
  return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, p));
}
inline __m512 load_half(const std::uint16_t* p, __mmask16 mask, bf16_tag) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask, p)), 16));
}

template <int NX, class Load>
void dot_float(std::int64_t n, Load load, const std::byte* x, std::size_t x_stride, float* out,
               std::size_t out_stride) {
  __m512 acc[NX];
  for (int j = 0; j < NX; ++j) acc[j] = _mm512_setzero_ps();
  for (std::int64_t i = 0; i < n; i += 16) {
    const __mmask16 mask = n - i >= 16 ? __mmask16(0xffff) : __mmask16((1u << (n - i)) - 1);
    const __m512 w = load(i, mask);
    for (int j = 0; j < NX; ++j) {
      const auto* xj = reinterpret_cast<const float*>(x + j * x_stride);
      acc[j] = _mm512_fmadd_ps(w, _mm512_maskz_loadu_ps(mask, xj + i), acc[j]);
    }
  }
  store(acc, out, out_stride);
}

template <int NX>
void dot_f32_n(std::int64_t n, const void* w, const std::byte* x, std::size_t xs, float* out, std::size_t os) {
  const auto* p = static_cast<const float*>(w);
  dot_float<NX>(n, [p](std::int64_t i, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p + i); }, x, xs, out, os);
}

template <int NX>
void dot_f16_n(std::int64_t n, const void* w, const std::byte* x, std::size_t xs, float* out, std::size_t os) {
  const auto* p = static_cast<const std::uint16_t*>(w);
  dot_float<NX>(n, [p](std::int64_t i, __mmask16 m) { return load_half(p + i, m, f16_tag{}); }, x, xs, out, os);
}

template <int NX>
void dot_bf16_n(std::int64_t n, const void* w, const std::byte* x, std::size_t xs, float* out, std::size_t os) {
  const auto* p = static_cast<const std::uint16_t*>(w);
  dot_float<NX>(n, [p](std::int64_t i, __mmask16 m) { return load_half(p + i, m, bf16_tag{}); }, x, xs, out, os);
}

// ---- 32-element block types, q8 activations ----

// Loads the activations of blocks i and i + 1 (or block i alone, upper half zero).
inline __m512i load_x_pair(const std::int8_t* qs, std::int64_t i, bool both) {
  return both ? _mm512_loadu_si512(qs + i * qk) : _mm512_maskz_loadu_epi8(0xffffffffULL, qs + i * qk);
}
inline __m512 load_dx_pair(const float* d, std::int64_t i, bool both) {
  return both ? load_pair(d + i) : make_pair(d[i], 0.0f);
}

template <int NX>
void dot_q8_0_n(std::int64_t n, const void* w, const std::byte* x, std::size_t xs, float* out, std::size_t os) {
  const auto* b = static_cast<const block_q8_0*>(w);
  const q8_columns<NX> c(x, xs, n);
  const std::int64_t nb = n / qk;
  __m512 acc[NX];
  for (int j = 0; j < NX; ++j) acc[j] = _mm512_setzero_ps();
  for (std::int64_t i = 0; i < nb; i += 2) {
    const bool both = i + 1 < nb;
    const __m256i lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[i].qs));
    const __m256i hi = both ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[i + 1].qs)) : _mm256_setzero_si256();
    const __m512i wv = _mm512_inserti64x4(_mm512_zextsi256_si512(lo), hi, 1);
    const __m512i w_abs = _mm512_abs_epi8(wv);
    const __mmask64 w_negative = _mm512_movepi8_mask(wv);
    const __m512 dw = make_pair(f16_to_f32(b[i].d), both ? f16_to_f32(b[i + 1].d) : 0.0f);
    for (int j = 0; j < NX; ++j) {
      const __m512i p = signed_dot(w_abs, w_negative, load_x_pair(c.rows[j].qs, i, both));
      acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_mul_ps(dw, load_dx_pair(c.rows[j].d, i, both)), acc[j]);
    }
  }
  store(acc, out, os);
}

// The nibbles of two 16-byte blocks as 64 values 0..15, in element order.
inline __m512i unpack_nibble_pair(const std::uint8_t* q0, const std::uint8_t* q1) {
  const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q0));
  const __m128i b = q1 ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(q1)) : _mm_setzero_si128();
  const __m512i t = _mm512_zextsi256_si512(_mm256_set_m128i(b, a));
  const __m512i spread = _mm512_shuffle_i64x2(t, t, _MM_SHUFFLE(1, 1, 0, 0));
  const __m512i shifted = _mm512_srlv_epi64(spread, _mm512_setr_epi64(0, 0, 4, 4, 0, 0, 4, 4));
  return _mm512_and_si512(shifted, _mm512_set1_epi8(0x0f));
}

template <int NX>
void dot_q4_0_n(std::int64_t n, const void* w, const std::byte* x, std::size_t xs, float* out, std::size_t os) {
  const auto* b = static_cast<const block_q4_0*>(w);
  const q8_columns<NX> c(x, xs, n);
  const std::int64_t nb = n / qk;
  __m512 acc[NX];
  for (int j = 0; j < NX; ++j) acc[j] = _mm512_setzero_ps();
  for (std::int64_t i = 0; i < nb; i += 2) {
    const bool both = i + 1 < nb;
    const __m512i wv = _mm512_sub_epi8(unpack_nibble_pair(b[i].qs, both ? b[i + 1].qs : nullptr), _mm512_set1_epi8(8));
    const __m512i w_abs = _mm512_abs_epi8(wv);
    const __mmask64 w_negative = _mm512_movepi8_mask(wv);
    const __m512 dw = make_pair(f16_to_f32(b[i].d), both ? f16_to_f32(b[i + 1].d) : 0.0f);
    for (int j = 0; j < NX; ++j) {
      const __m512i p = signed_dot(w_abs, w_negative, load_x_pair(c.rows[j].qs, i, both));
      acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_mul_ps(dw, load_dx_pair(c.rows[j].d, i, both)), acc[j]);
    }
  }
  store(acc, out, os);
}

template <int NX>
void dot_q4_1_n(std::int64_t n, const void* w, const std::byte* x, std::size_t xs, float* out, std::size_t os) {
  const auto* b = static_cast<const block_q4_1*>(w);
  const q8_columns<NX> c(x, xs, n);
  const std::int64_t nb = n / qk;
  __m512 acc[NX];
  float offsets[NX] = {};
  for (int j = 0; j < NX; ++j) acc[j] = _mm512_setzero_ps();
  for (std::int64_t i = 0; i < nb; i += 2) {
    const bool both = i + 1 < nb;
    const __m512i wv = unpack_nibble_pair(b[i].qs, both ? b[i + 1].qs : nullptr);
    const __m512 dw = make_pair(f16_to_f32(b[i].d), both ? f16_to_f32(b[i + 1].d) : 0.0f);
    const float m0 = f16_to_f32(b[i].m);
    const float m1 = both ? f16_to_f32(b[i + 1].m) : 0.0f;
    for (int j = 0; j < NX; ++j) {
      const __m512i p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wv, load_x_pair(c.rows[j].qs, i, both));
      acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_mul_ps(dw, load_dx_pair(c.rows[j].d, i, both)), acc[j]);
      offsets[j] += m0 * c.rows[j].sums[i] + (both ? m1 * c.rows[j].sums[i + 1] : 0.0f);
    }
  }
  for (int j = 0; j < NX; ++j) out[j * os] = _mm512_reduce_add_ps(acc[j]) + offsets[j];
}

// ---- K-quants, q8 activations ----

template <int NX>
void dot_q4_k_n(std::int64_t n, const void* w, const std::byte* x, std::size_t xs, float* out, std::size_t os) {
  const auto* b = static_cast<const block_q4_k*>(w);
  const q8_columns<NX> c(x, xs, n);
  __m512 acc[NX];
  __m256 offsets[NX];
  for (int j = 0; j < NX; ++j) {
    acc[j] = _mm512_setzero_ps();
    offsets[j] = _mm256_setzero_ps();
  }
  const __m512i nibble_shift = _mm512_setr_epi64(0, 0, 0, 0, 4, 4, 4, 4);
  const __m512i low4 = _mm512_set1_epi8(0x0f);
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
    const __m512 scale_v = _mm512_zextps256_ps512(_mm256_load_ps(scales));
    const __m256 min_v = _mm256_load_ps(mins);
    __m512 dx[NX];
    for (int j = 0; j < NX; ++j) {
      dx[j] = _mm512_zextps256_ps512(_mm256_loadu_ps(c.rows[j].d + 8 * i));
      offsets[j] = _mm256_fmadd_ps(min_v, _mm256_loadu_ps(c.rows[j].sums + 8 * i), offsets[j]);
    }
    for (int chunk = 0; chunk < 4; ++chunk) {
      const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[i].qs + 32 * chunk));
      const __m512i both = _mm512_inserti64x4(_mm512_zextsi256_si512(q), q, 1);
      const __m512i wv = _mm512_and_si512(_mm512_srlv_epi64(both, nibble_shift), low4);
      const __m512i index = pair_index(2 * chunk);
      const __m512 ws = _mm512_permutexvar_ps(index, scale_v);
      for (int j = 0; j < NX; ++j) {
        const __m512i xv = _mm512_loadu_si512(c.rows[j].qs + i * qk_k + 64 * chunk);
        const __m512i p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wv, xv);
        acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_mul_ps(ws, _mm512_permutexvar_ps(index, dx[j])), acc[j]);
      }
    }
  }
  for (int j = 0; j < NX; ++j) {
    const __m128 o = _mm_add_ps(_mm256_castps256_ps128(offsets[j]), _mm256_extractf128_ps(offsets[j], 1));
    const __m128 o2 = _mm_add_ps(o, _mm_movehl_ps(o, o));
    out[j * os] = _mm512_reduce_add_ps(acc[j]) - _mm_cvtss_f32(_mm_add_ss(o2, _mm_movehdup_ps(o2)));
  }
}

template <int NX>
void dot_q6_k_n(std::int64_t n, const void* w, const std::byte* x, std::size_t xs, float* out, std::size_t os) {
  const auto* b = static_cast<const block_q6_k*>(w);
  const q8_columns<NX> c(x, xs, n);
  __m512 acc[NX];
  for (int j = 0; j < NX; ++j) acc[j] = _mm512_setzero_ps();
  const __m512i low4 = _mm512_set1_epi8(0x0f);
  const __m512i low2 = _mm512_set1_epi8(0x03);
  const __m512i bias = _mm512_set1_epi8(32);
  const __m512i shift_a = _mm512_setr_epi64(0, 0, 0, 0, 2, 2, 2, 2);
  const __m512i shift_b = _mm512_setr_epi64(4, 4, 4, 4, 6, 6, 6, 6);
  for (std::int64_t i = 0; i < n / qk_k; ++i) {
    const __m512 scale_v = _mm512_mul_ps(
        _mm512_set1_ps(f16_to_f32(b[i].d)),
        _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b[i].scales)))));
    __m512 dx[NX];
    for (int j = 0; j < NX; ++j) dx[j] = _mm512_zextps256_ps512(_mm256_loadu_ps(c.rows[j].d + 8 * i));
    for (int half = 0; half < 2; ++half) {
      const __m512i ql = _mm512_loadu_si512(b[i].ql + 64 * half);
      const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[i].qh + 32 * half));
      const __m512i qh2 = _mm512_inserti64x4(_mm512_zextsi256_si512(qh), qh, 1);
      const __m512i high_a = _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi64(qh2, shift_a), low2), 4);
      const __m512i high_b = _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi64(qh2, shift_b), low2), 4);
      const __m512i parts[2] = {
          _mm512_sub_epi8(_mm512_or_si512(_mm512_and_si512(ql, low4), high_a), bias),
          _mm512_sub_epi8(_mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), low4), high_b), bias),
      };
      for (int p = 0; p < 2; ++p) {
        const int chunk = 2 * half + p;
        const __m512i w_abs = _mm512_abs_epi8(parts[p]);
        const __mmask64 w_negative = _mm512_movepi8_mask(parts[p]);
        const __m512 ws = _mm512_permutexvar_ps(quad_index(4 * chunk), scale_v);
        const __m512i index = pair_index(2 * chunk);
        for (int j = 0; j < NX; ++j) {
          const __m512i xv = _mm512_loadu_si512(c.rows[j].qs + i * qk_k + 64 * chunk);
          const __m512i dot = signed_dot(w_abs, w_negative, xv);
          acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(ws, _mm512_permutexvar_ps(index, dx[j])), acc[j]);
        }
      }
    }
  }
  store(acc, out, os);
}

void quantize_q8(const float* src, std::byte* dst, std::int64_t n) {
  auto* qs = reinterpret_cast<std::int8_t*>(dst);
  auto* d = reinterpret_cast<float*>(dst + n);
  float* sums = d + n / qk;
  for (std::int64_t i = 0; i < n / qk; ++i) {
    const __m512 a = _mm512_loadu_ps(src + i * qk);
    const __m512 b = _mm512_loadu_ps(src + i * qk + 16);
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(a), _mm512_abs_ps(b)));
    const __m512 inverse = _mm512_set1_ps(amax != 0.0f ? 127.0f / amax : 0.0f);
    const __m512i qa = _mm512_cvtps_epi32(_mm512_mul_ps(a, inverse));  // round to nearest even
    const __m512i qb = _mm512_cvtps_epi32(_mm512_mul_ps(b, inverse));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(qs + i * qk), _mm512_cvtsepi32_epi8(qa));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(qs + i * qk + 16), _mm512_cvtsepi32_epi8(qb));
    d[i] = amax / 127.0f;
    sums[i] = d[i] * static_cast<float>(_mm512_reduce_add_epi32(_mm512_add_epi32(qa, qb)));
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
CHATAI_COLUMN_DISPATCH(dot_q4_k)
CHATAI_COLUMN_DISPATCH(dot_q6_k)
#undef CHATAI_COLUMN_DISPATCH

}  // namespace

const kernel_table& avx512_kernels() noexcept {
  static const kernel_table table{cpu_isa::avx512, dot_f32, dot_f16, dot_bf16, dot_q8_0, dot_q4_0,
                                  dot_q4_1, dot_q4_k, dot_q6_k, quantize_q8};
  return table;
}

}  // namespace chatai::engine::cpu

#pragma GCC pop_options

#endif

#pragma GCC diagnostic pop
