// AVX-512 kernels (F, BW, VL, VNNI): two 32-element blocks per 512-bit register, integer
// dot products with vpdpbusd, each weight row unpacked once for up to four activation rows.
// GCC 12's AVX-512 headers trip its own uninitialized-value warnings (GCC bug 105593).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>

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

// Blocks go eight at a time: their scales are converted together (one gather of the 32-bit
// word at each block's start), multiplied by the activation scales, and spread over the
// pairs of blocks with a permute; the weights go a pair (64 values) at a time.
inline constexpr int group_blocks = 8;

// Loads the activations of blocks i and i + 1 (or block i alone, upper half zero).
inline __m512i load_x_pair(const std::int8_t* qs, std::int64_t i, bool both) {
  return both ? _mm512_loadu_si512(qs + i * qk) : _mm512_maskz_loadu_epi8(0xffffffffULL, qs + i * qk);
}

// The 32-bit words at the start of the first `mask` blocks of `first` (zero elsewhere).
template <class Block>
inline __m256i gather_block_words(const Block* first, __mmask8 mask) {
  constexpr int s = static_cast<int>(sizeof(Block));
  const __m256i offsets = _mm256_setr_epi32(0, s, 2 * s, 3 * s, 4 * s, 5 * s, 6 * s, 7 * s);
  return _mm256_mmask_i32gather_epi32(_mm256_setzero_si256(), mask, offsets, first, 1);
}

// The f16 in the low (or, shifted down first, the high) half of each word, as floats.
inline __m256 low_halves(__m256i words) { return _mm256_cvtph_ps(_mm256_cvtepi32_epi16(words)); }
inline __m256 high_halves(__m256i words) { return low_halves(_mm256_srli_epi32(words, 16)); }

// The nibbles of two 16-byte blocks as 64 values 0..15, in element order.
inline __m512i unpack_nibble_pair(const std::uint8_t* q0, const std::uint8_t* q1) {
  const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q0));
  const __m128i b = q1 ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(q1)) : _mm_setzero_si128();
  const __m512i t = _mm512_zextsi256_si512(_mm256_set_m128i(b, a));
  const __m512i spread = _mm512_shuffle_i64x2(t, t, _MM_SHUFFLE(1, 1, 0, 0));
  const __m512i shifted = _mm512_srlv_epi64(spread, _mm512_setr_epi64(0, 0, 4, 4, 0, 0, 4, 4));
  return _mm512_and_si512(shifted, _mm512_set1_epi8(0x0f));
}

// Each format gives, per group, the weight scales and the offsets (the value of quantum 0,
// which multiplies the activation sums; absent for Q8_0), and per pair the 64 quanta: signed
// ones as magnitude and sign, unsigned ones as they are.
struct q8_0_format {
  using block = block_q8_0;
  static constexpr bool is_signed = true;
  static constexpr bool has_offset = false;
  static __m256 scales(__m256i words) { return low_halves(words); }
  static __m256 offsets(__m256i) { return _mm256_setzero_ps(); }
  static __m512i quanta(const block* b, bool both) {
    const __m256i lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[0].qs));
    const __m256i hi = both ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[1].qs)) : _mm256_setzero_si256();
    return _mm512_inserti64x4(_mm512_zextsi256_si512(lo), hi, 1);
  }
};

// Q4_0 as unsigned nibbles with offset -8 d: one instruction fewer per pair than signed.
struct q4_0_format {
  using block = block_q4_0;
  static constexpr bool is_signed = false;
  static constexpr bool has_offset = true;
  static __m256 scales(__m256i words) { return low_halves(words); }
  static __m256 offsets(__m256i words) { return _mm256_mul_ps(low_halves(words), _mm256_set1_ps(-8.0f)); }
  static __m512i quanta(const block* b, bool both) { return unpack_nibble_pair(b[0].qs, both ? b[1].qs : nullptr); }
};

struct q4_1_format {
  using block = block_q4_1;
  static constexpr bool is_signed = false;
  static constexpr bool has_offset = true;
  static __m256 scales(__m256i words) { return low_halves(words); }
  static __m256 offsets(__m256i words) { return high_halves(words); }
  static __m512i quanta(const block* b, bool both) { return unpack_nibble_pair(b[0].qs, both ? b[1].qs : nullptr); }
};

// The fifth bits of two Q5_0 or Q5_1 blocks (bit e of qh for element e) as 0x10 in byte e.
template <class Block>
inline __m512i fifth_bit_pair(const Block* b, bool both) {
  std::uint32_t lo, hi = 0;
  std::memcpy(&lo, b[0].qh, sizeof lo);
  if (both) std::memcpy(&hi, b[1].qh, sizeof hi);
  const auto bits = static_cast<__mmask64>(lo | (static_cast<std::uint64_t>(hi) << 32));
  return _mm512_maskz_mov_epi8(bits, _mm512_set1_epi8(0x10));
}

// Q5_0 as unsigned levels with offset -16 d, as Q4_0.
struct q5_0_format {
  using block = block_q5_0;
  static constexpr bool is_signed = false;
  static constexpr bool has_offset = true;
  static __m256 scales(__m256i words) { return low_halves(words); }
  static __m256 offsets(__m256i words) { return _mm256_mul_ps(low_halves(words), _mm256_set1_ps(-16.0f)); }
  static __m512i quanta(const block* b, bool both) {
    return _mm512_or_si512(unpack_nibble_pair(b[0].qs, both ? b[1].qs : nullptr), fifth_bit_pair(b, both));
  }
};

struct q5_1_format {
  using block = block_q5_1;
  static constexpr bool is_signed = false;
  static constexpr bool has_offset = true;
  static __m256 scales(__m256i words) { return low_halves(words); }
  static __m256 offsets(__m256i words) { return high_halves(words); }
  static __m512i quanta(const block* b, bool both) {
    return _mm512_or_si512(unpack_nibble_pair(b[0].qs, both ? b[1].qs : nullptr), fifth_bit_pair(b, both));
  }
};

inline float reduce_add(__m256 v) {
  const __m128 o = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 o2 = _mm_add_ps(o, _mm_movehl_ps(o, o));
  return _mm_cvtss_f32(_mm_add_ss(o2, _mm_movehdup_ps(o2)));
}

template <int NX, class Format>
void dot_blocks_n(std::int64_t n, const void* w, const std::byte* x, std::size_t xs, float* out, std::size_t os) {
  using block = typename Format::block;
  const auto* b = static_cast<const block*>(w);
  const q8_columns<NX> c(x, xs, n);
  const std::int64_t nb = n / qk;
  const __m512i pair_at[group_blocks / 2] = {pair_index(0), pair_index(2), pair_index(4), pair_index(6)};
  __m512 acc[NX];
  __m256 offsets[NX];
  for (int j = 0; j < NX; ++j) {
    acc[j] = _mm512_setzero_ps();
    offsets[j] = _mm256_setzero_ps();
  }
  for (std::int64_t g = 0; g < nb; g += group_blocks) {
    const int count = static_cast<int>(std::min<std::int64_t>(group_blocks, nb - g));
    const auto mask = static_cast<__mmask8>((1u << count) - 1);
    const __m256i words = gather_block_words(b + g, mask);
    const __m256 dw = Format::scales(words);
    __m512 scale[NX];
    for (int j = 0; j < NX; ++j) scale[j] = _mm512_zextps256_ps512(_mm256_mul_ps(dw, _mm256_maskz_loadu_ps(mask, c.rows[j].d + g)));
    if constexpr (Format::has_offset) {
      const __m256 m = Format::offsets(words);
      for (int j = 0; j < NX; ++j) offsets[j] = _mm256_fmadd_ps(m, _mm256_maskz_loadu_ps(mask, c.rows[j].sums + g), offsets[j]);
    }
    const auto pair = [&](int k, bool both) {
      const std::int64_t i = g + 2 * k;
      const __m512i q = Format::quanta(b + i, both);
      if constexpr (Format::is_signed) {
        const __m512i q_abs = _mm512_abs_epi8(q);
        const __mmask64 q_negative = _mm512_movepi8_mask(q);
        for (int j = 0; j < NX; ++j) {
          const __m512i p = signed_dot(q_abs, q_negative, load_x_pair(c.rows[j].qs, i, both));
          acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_permutexvar_ps(pair_at[k], scale[j]), acc[j]);
        }
      } else {
        for (int j = 0; j < NX; ++j) {
          const __m512i p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q, load_x_pair(c.rows[j].qs, i, both));
          acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_permutexvar_ps(pair_at[k], scale[j]), acc[j]);
        }
      }
    };
    if (count == group_blocks) {
#pragma GCC unroll 4
      for (int k = 0; k < group_blocks / 2; ++k) pair(k, true);
    } else {
      for (int k = 0; 2 * k < count; ++k) pair(k, 2 * k + 1 < count);
    }
  }
  for (int j = 0; j < NX; ++j) {
    out[j * os] = _mm512_reduce_add_ps(acc[j]);
    if constexpr (Format::has_offset) out[j * os] += reduce_add(offsets[j]);
  }
}

template <int NX>
void dot_q8_0_n(std::int64_t n, const void* w, const std::byte* x, std::size_t xs, float* out, std::size_t os) {
  dot_blocks_n<NX, q8_0_format>(n, w, x, xs, out, os);
}

template <int NX>
void dot_q4_0_n(std::int64_t n, const void* w, const std::byte* x, std::size_t xs, float* out, std::size_t os) {
  dot_blocks_n<NX, q4_0_format>(n, w, x, xs, out, os);
}

template <int NX>
void dot_q4_1_n(std::int64_t n, const void* w, const std::byte* x, std::size_t xs, float* out, std::size_t os) {
  dot_blocks_n<NX, q4_1_format>(n, w, x, xs, out, os);
}

template <int NX>
void dot_q5_0_n(std::int64_t n, const void* w, const std::byte* x, std::size_t xs, float* out, std::size_t os) {
  dot_blocks_n<NX, q5_0_format>(n, w, x, xs, out, os);
}

template <int NX>
void dot_q5_1_n(std::int64_t n, const void* w, const std::byte* x, std::size_t xs, float* out, std::size_t os) {
  dot_blocks_n<NX, q5_1_format>(n, w, x, xs, out, os);
}

// ---- K-quants, q8 activations ----

// The bytes of the lower 256 bits set to `lo`, of the upper to `hi`.
inline __m512i bytes_per_half(int lo, int hi) {
  return _mm512_inserti64x4(_mm512_set1_epi8(static_cast<char>(lo)), _mm256_set1_epi8(static_cast<char>(hi)), 1);
}

// Q4_K and Q5_K, whose fifth bits (qh) are added to the nibbles.
template <int NX, class Block>
void dot_k4_family_n(std::int64_t n, const void* w, const std::byte* x, std::size_t xs, float* out, std::size_t os) {
  constexpr bool fifth_bit = std::is_same_v<Block, block_q5_k>;
  const auto* b = static_cast<const Block*>(w);
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
    const float d = _cvtsh_ss(b[i].d);
    const float dmin = _cvtsh_ss(b[i].dmin);
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
      __m512i wv = _mm512_and_si512(_mm512_srlv_epi64(both, nibble_shift), low4);
      if constexpr (fifth_bit) {
        const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[i].qh));
        const __m512i qh2 = _mm512_inserti64x4(_mm512_zextsi256_si512(qh), qh, 1);
        const __mmask64 high = _mm512_test_epi8_mask(qh2, bytes_per_half(1 << (2 * chunk), 1 << (2 * chunk + 1)));
        wv = _mm512_mask_add_epi8(wv, high, wv, _mm512_set1_epi8(0x10));
      }
      const __m512i index = pair_index(2 * chunk);
      const __m512 ws = _mm512_permutexvar_ps(index, scale_v);
      for (int j = 0; j < NX; ++j) {
        const __m512i xv = _mm512_loadu_si512(c.rows[j].qs + i * qk_k + 64 * chunk);
        const __m512i p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wv, xv);
        acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_mul_ps(ws, _mm512_permutexvar_ps(index, dx[j])), acc[j]);
      }
    }
  }
  for (int j = 0; j < NX; ++j) out[j * os] = _mm512_reduce_add_ps(acc[j]) - reduce_add(offsets[j]);
}

template <int NX>
void dot_q4_k_n(std::int64_t n, const void* w, const std::byte* x, std::size_t xs, float* out, std::size_t os) {
  dot_k4_family_n<NX, block_q4_k>(n, w, x, xs, out, os);
}

template <int NX>
void dot_q5_k_n(std::int64_t n, const void* w, const std::byte* x, std::size_t xs, float* out, std::size_t os) {
  dot_k4_family_n<NX, block_q5_k>(n, w, x, xs, out, os);
}

// Q2_K and Q3_K: a pair of activation blocks takes the 32 bytes of its 128 elements twice,
// each half shifted to its block's 2-bit field (field_shift); the 16 sub-block scales are
// spread four lanes each.
template <int NX>
void dot_q2_k_n(std::int64_t n, const void* w, const std::byte* x, std::size_t xs, float* out, std::size_t os) {
  const auto* b = static_cast<const block_q2_k*>(w);
  const q8_columns<NX> c(x, xs, n);
  __m512 acc[NX];
  __m512 offsets[NX];
  for (int j = 0; j < NX; ++j) acc[j] = offsets[j] = _mm512_setzero_ps();
  const __m512i low2 = _mm512_set1_epi8(0x03);
  const __m512i ones = _mm512_set1_epi8(1);
  const __m512i field_shift[2] = {_mm512_setr_epi64(0, 0, 0, 0, 2, 2, 2, 2), _mm512_setr_epi64(4, 4, 4, 4, 6, 6, 6, 6)};
  for (std::int64_t i = 0; i < n / qk_k; ++i) {
    const __m512i sc = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b[i].scales)));
    const __m512 scale_v = _mm512_mul_ps(_mm512_set1_ps(_cvtsh_ss(b[i].d)),
                                         _mm512_cvtepi32_ps(_mm512_and_si512(sc, _mm512_set1_epi32(0x0f))));
    const __m512 min_v =
        _mm512_mul_ps(_mm512_set1_ps(_cvtsh_ss(b[i].dmin)), _mm512_cvtepi32_ps(_mm512_srli_epi32(sc, 4)));
    __m512 dx[NX];
    for (int j = 0; j < NX; ++j) dx[j] = _mm512_zextps256_ps512(_mm256_loadu_ps(c.rows[j].d + 8 * i));
    for (int chunk = 0; chunk < 4; ++chunk) {
      const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[i].qs + 32 * (chunk / 2)));
      const __m512i both = _mm512_inserti64x4(_mm512_zextsi256_si512(q), q, 1);
      const __m512i wv = _mm512_and_si512(_mm512_srlv_epi64(both, field_shift[chunk % 2]), low2);
      const __m512 ws = _mm512_permutexvar_ps(quad_index(4 * chunk), scale_v);
      const __m512 wm = _mm512_permutexvar_ps(quad_index(4 * chunk), min_v);
      const __m512i index = pair_index(2 * chunk);
      for (int j = 0; j < NX; ++j) {
        const __m512i xv = _mm512_loadu_si512(c.rows[j].qs + i * qk_k + 64 * chunk);
        const __m512 dxj = _mm512_permutexvar_ps(index, dx[j]);
        const __m512i p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wv, xv);
        const __m512i sums = _mm512_dpbusd_epi32(_mm512_setzero_si512(), ones, xv);
        acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_mul_ps(ws, dxj), acc[j]);
        offsets[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums), _mm512_mul_ps(wm, dxj), offsets[j]);
      }
    }
  }
  for (int j = 0; j < NX; ++j) out[j * os] = _mm512_reduce_add_ps(acc[j]) - _mm512_reduce_add_ps(offsets[j]);
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
  __m512 acc[NX];
  for (int j = 0; j < NX; ++j) acc[j] = _mm512_setzero_ps();
  const __m512i low2 = _mm512_set1_epi8(0x03);
  const __m512i four = _mm512_set1_epi8(4);
  const __m512i field_shift[2] = {_mm512_setr_epi64(0, 0, 0, 0, 2, 2, 2, 2), _mm512_setr_epi64(4, 4, 4, 4, 6, 6, 6, 6)};
  for (std::int64_t i = 0; i < n / qk_k; ++i) {
    const __m512i sc = _mm512_cvtepi8_epi32(q3_k_scales(b[i].scales));
    const __m512 scale_v = _mm512_mul_ps(_mm512_set1_ps(_cvtsh_ss(b[i].d)), _mm512_cvtepi32_ps(sc));
    __m512 dx[NX];
    for (int j = 0; j < NX; ++j) dx[j] = _mm512_zextps256_ps512(_mm256_loadu_ps(c.rows[j].d + 8 * i));
    const __m256i hm = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[i].hmask));
    const __m512i hm2 = _mm512_inserti64x4(_mm512_zextsi256_si512(hm), hm, 1);
    for (int chunk = 0; chunk < 4; ++chunk) {
      const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[i].qs + 32 * (chunk / 2)));
      const __m512i both = _mm512_inserti64x4(_mm512_zextsi256_si512(q), q, 1);
      const __m512i low = _mm512_and_si512(_mm512_srlv_epi64(both, field_shift[chunk % 2]), low2);
      // Blocks 2 chunk and 2 chunk + 1 have their third bits in those bits of hmask.
      const __mmask64 high = _mm512_test_epi8_mask(hm2, bytes_per_half(1 << (2 * chunk), 1 << (2 * chunk + 1)));
      const __m512i wv = _mm512_sub_epi8(_mm512_mask_add_epi8(low, high, low, four), four);
      const __m512i w_abs = _mm512_abs_epi8(wv);
      const __mmask64 w_negative = _mm512_movepi8_mask(wv);
      const __m512 ws = _mm512_permutexvar_ps(quad_index(4 * chunk), scale_v);
      const __m512i index = pair_index(2 * chunk);
      for (int j = 0; j < NX; ++j) {
        const __m512i xv = _mm512_loadu_si512(c.rows[j].qs + i * qk_k + 64 * chunk);
        const __m512i dot = signed_dot(w_abs, w_negative, xv);
        acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(ws, _mm512_permutexvar_ps(index, dx[j])), acc[j]);
      }
    }
  }
  store(acc, out, os);
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
        _mm512_set1_ps(_cvtsh_ss(b[i].d)),
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

inline __mmask16 first_lanes(std::int64_t count) {
  return count >= 16 ? __mmask16(0xffff) : count <= 0 ? __mmask16(0) : static_cast<__mmask16>((1u << count) - 1);
}

// e^x for x <= 0 (softmax arguments less their maximum), to a few units in the last place:
// x = n ln 2 + r with |r| <= ln 2 / 2, e^r by its degree-6 polynomial, times 2^n (scalef).
inline __m512 exp_nonpositive(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  const __m512 y = _mm512_add_ps(_mm512_fmadd_ps(_mm512_mul_ps(p, r), r, r), _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(y, n);
}

// scores[j] = e^(scores[j] - max) for j < n; returns their sum.
inline float softmax_numerators(float* scores, std::int64_t n) {
  __m512 top = _mm512_set1_ps(-INFINITY);
  for (std::int64_t j = 0; j < n; j += 16)
    top = _mm512_mask_max_ps(top, first_lanes(n - j), top, _mm512_maskz_loadu_ps(first_lanes(n - j), scores + j));
  const __m512 m = _mm512_set1_ps(_mm512_reduce_max_ps(top));
  __m512 total = _mm512_setzero_ps();
  for (std::int64_t j = 0; j < n; j += 16) {
    const __mmask16 lanes = first_lanes(n - j);
    const __m512 e = exp_nonpositive(_mm512_sub_ps(_mm512_maskz_loadu_ps(lanes, scores + j), m));
    _mm512_mask_storeu_ps(scores + j, lanes, e);
    total = _mm512_mask_add_ps(total, lanes, total, e);
  }
  return _mm512_reduce_add_ps(total);
}

void soft_cap(float* scores, std::int64_t n, float cap);
void attend(std::int64_t head_dim, const float* q, const kv_columns& keys, const kv_rows& values, std::int64_t first,
            std::int64_t n, float scale, float softcap, float* scores, float* out);

// A page at a time for every query of the tile: its 16 scores in one vector (as attend), the
// online softmax's maximum and sum updated, the output rescaled and the page's weighted values
// added while the page is in cache.
void attend_tile(std::int64_t head_dim, const tile_query* queries, std::int64_t count, const kv_columns& keys,
                 const kv_rows& values, float scale, float softcap, float* scratch) {
  if (keys.page_rows != 16) return attend_each(attend, head_dim, queries, count, keys, values, scale, softcap, scratch);
  tile_state state(head_dim, queries, count, scratch);
  float* run_max = state.run_max;
  float* run_sum = state.run_sum;
  const __m512 s = _mm512_set1_ps(scale);
  alignas(64) float p[16];
  for (std::int64_t pg = state.first / 16, j0 = pg * 16; j0 < state.end; ++pg, j0 += 16) {
    const float* base = keys.pages[pg] + keys.offset;
    const float* rows = values.pages[pg] + values.offset;  // row r at rows + r * values.stride
    for (std::int64_t qi = 0; qi < count; ++qi) {
      const tile_query& t = queries[qi];
      if (j0 >= t.n || j0 + 16 <= t.first) continue;
      __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
      std::int64_t i = 0;
      for (; i + 4 <= head_dim; i += 4) {
        for (int u = 0; u < 4; ++u)
          acc[u] = _mm512_fmadd_ps(_mm512_set1_ps(t.q[i + u]), _mm512_loadu_ps(base + (i + u) * 16), acc[u]);
      }
      for (; i < head_dim; ++i) acc[0] = _mm512_fmadd_ps(_mm512_set1_ps(t.q[i]), _mm512_loadu_ps(base + i * 16), acc[0]);
      __m512 sc = _mm512_mul_ps(_mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3])), s);
      if (softcap > 0.0f) {
        _mm512_store_ps(p, sc);
        soft_cap(p, 16, softcap);
        sc = _mm512_load_ps(p);
      }
      const std::int64_t r_begin = std::max<std::int64_t>(t.first - j0, 0), r_end = std::min<std::int64_t>(t.n - j0, 16);
      const __mmask16 valid = static_cast<__mmask16>(first_lanes(r_end) & ~first_lanes(r_begin));
      const float page_max = _mm512_mask_reduce_max_ps(valid, sc);
      const float new_max = std::max(run_max[qi], page_max);
      const float factor = run_max[qi] == -INFINITY ? 0.0f : std::exp(run_max[qi] - new_max);
      const __m512 e = _mm512_maskz_mov_ps(valid, exp_nonpositive(_mm512_sub_ps(sc, _mm512_set1_ps(new_max))));
      run_sum[qi] = run_sum[qi] * factor + _mm512_reduce_add_ps(e);
      run_max[qi] = new_max;
      _mm512_store_ps(p, e);
      const __m512 f = _mm512_set1_ps(factor);
      for (std::int64_t c = 0; c < head_dim; c += 16) {
        const __mmask16 m = first_lanes(head_dim - c);
        __m512 a = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, t.out + c), f);
        __m512 b = _mm512_setzero_ps();
        std::int64_t r = r_begin;
        for (; r + 1 < r_end; r += 2) {
          a = _mm512_fmadd_ps(_mm512_set1_ps(p[r]), _mm512_maskz_loadu_ps(m, rows + r * values.stride + c), a);
          b = _mm512_fmadd_ps(_mm512_set1_ps(p[r + 1]), _mm512_maskz_loadu_ps(m, rows + (r + 1) * values.stride + c), b);
        }
        if (r < r_end) a = _mm512_fmadd_ps(_mm512_set1_ps(p[r]), _mm512_maskz_loadu_ps(m, rows + r * values.stride + c), a);
        _mm512_mask_storeu_ps(t.out + c, m, _mm512_add_ps(a, b));
      }
    }
  }
  state.finish(head_dim, queries, count);
}

float softmax(float* x, std::int64_t n, float scale) {
  __m512 top = _mm512_set1_ps(-INFINITY);
  for (std::int64_t j = 0; j < n; j += 16)
    top = _mm512_mask_max_ps(top, first_lanes(n - j), top, _mm512_maskz_loadu_ps(first_lanes(n - j), x + j));
  const __m512 m = _mm512_set1_ps(_mm512_reduce_max_ps(top)), s = _mm512_set1_ps(scale);
  const __m512 floor = _mm512_set1_ps(-87.0f);
  __m512 total = _mm512_setzero_ps();
  for (std::int64_t j = 0; j < n; j += 16) {
    const __mmask16 lanes = first_lanes(n - j);
    const __m512 a = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(lanes, x + j), m), s);
    const __m512 e = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(a, floor, _CMP_GE_OQ), exp_nonpositive(a));
    _mm512_mask_storeu_ps(x + j, lanes, e);
    total = _mm512_mask_add_ps(total, lanes, total, e);
  }
  return _mm512_reduce_add_ps(total);
}

// e = e^(-|x|) for the logistic function and tanh: sigmoid(x) = 1 / (1 + e) for x >= 0 and
// e / (1 + e) below; tanh(|y|) = (1 - e') / (1 + e') with e' = e^(-2|y|).
void swiglu(float* gate, const float* up, std::int64_t n) {
  const __m512 one = _mm512_set1_ps(1.0f);
  for (std::int64_t i = 0; i < n; i += 16) {
    const __mmask16 lanes = first_lanes(n - i);
    const __m512 x = _mm512_maskz_loadu_ps(lanes, gate + i);
    const __m512 e = exp_nonpositive(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_abs_ps(x)));
    const __m512 inv = _mm512_div_ps(one, _mm512_add_ps(one, e));
    const __mmask16 negative = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ);
    const __m512 sig = _mm512_mask_mul_ps(inv, negative, e, inv);
    _mm512_mask_storeu_ps(gate + i, lanes, _mm512_mul_ps(_mm512_mul_ps(x, sig), _mm512_maskz_loadu_ps(lanes, up + i)));
  }
}

void geglu(float* gate, const float* up, std::int64_t n) {
  const __m512 one = _mm512_set1_ps(1.0f), half = _mm512_set1_ps(0.5f);
  const __m512 c = _mm512_set1_ps(0.7978845608028654f), k = _mm512_set1_ps(0.044715f), m2 = _mm512_set1_ps(-2.0f);
  for (std::int64_t i = 0; i < n; i += 16) {
    const __mmask16 lanes = first_lanes(n - i);
    const __m512 x = _mm512_maskz_loadu_ps(lanes, gate + i);
    const __m512 y = _mm512_mul_ps(c, _mm512_fmadd_ps(_mm512_mul_ps(k, x), _mm512_mul_ps(x, x), x));
    const __m512 e = exp_nonpositive(_mm512_mul_ps(m2, _mm512_abs_ps(y)));
    __m512 t = _mm512_div_ps(_mm512_sub_ps(one, e), _mm512_add_ps(one, e));
    t = _mm512_mask_sub_ps(t, _mm512_cmp_ps_mask(y, _mm512_setzero_ps(), _CMP_LT_OQ), _mm512_setzero_ps(), t);
    const __m512 g = _mm512_mul_ps(_mm512_mul_ps(half, x), _mm512_add_ps(one, t));
    _mm512_mask_storeu_ps(gate + i, lanes, _mm512_mul_ps(g, _mm512_maskz_loadu_ps(lanes, up + i)));
  }
}

// Scores a position at a time; the weighted values in 64-float slices of the head, held in
// registers over all positions.
// scores[j] = cap * tanh(scores[j] / cap) for j < n: tanh(y) = sign(y) (1 - e) / (1 + e) with
// e = e^(-2|y|).
void soft_cap(float* scores, std::int64_t n, float cap) {
  const __m512 c = _mm512_set1_ps(cap), inv = _mm512_set1_ps(-2.0f / cap), one = _mm512_set1_ps(1.0f);
  for (std::int64_t j = 0; j < n; j += 16) {
    const __mmask16 lanes = first_lanes(n - j);
    const __m512 x = _mm512_maskz_loadu_ps(lanes, scores + j);
    const __m512 e = exp_nonpositive(_mm512_mul_ps(_mm512_abs_ps(x), inv));
    const __m512 t = _mm512_mul_ps(c, _mm512_div_ps(_mm512_sub_ps(one, e), _mm512_add_ps(one, e)));
    const __m512i sign = _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(static_cast<int>(0x80000000u)));
    _mm512_mask_storeu_ps(scores + j, lanes, _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(t), sign)));
  }
}

void attend(std::int64_t head_dim, const float* q, const kv_columns& keys, const kv_rows& values, std::int64_t first,
            std::int64_t n, float scale, float softcap, float* scores, float* out) {
  if (keys.page_rows == 16) {
    // A page's 16 scores in one vector: per dimension, one broadcast of q times that dimension
    // of the 16 keys; four sums in flight.
    for (std::int64_t p = first / 16, j0 = p * 16; j0 < n; j0 += 16, ++p) {
      const float* base = keys.pages[p] + keys.offset;
      __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
      std::int64_t i = 0;
      for (; i + 4 <= head_dim; i += 4) {
        for (int u = 0; u < 4; ++u)
          acc[u] = _mm512_fmadd_ps(_mm512_set1_ps(q[i + u]), _mm512_loadu_ps(base + (i + u) * 16), acc[u]);
      }
      for (; i < head_dim; ++i) acc[0] = _mm512_fmadd_ps(_mm512_set1_ps(q[i]), _mm512_loadu_ps(base + i * 16), acc[0]);
      const __m512 sum = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
      _mm512_mask_storeu_ps(scores + j0, first_lanes(n - j0), _mm512_mul_ps(sum, _mm512_set1_ps(scale)));
    }
  } else {
    score_columns(head_dim, q, keys, first, n, scale, scores);
  }
  if (softcap > 0.0f) soft_cap(scores + first, n - first, softcap);
  const float sum = softmax_numerators(scores + first, n - first);
  const __m512 inverse = _mm512_set1_ps(1.0f / sum);
  for (std::int64_t c = 0; c < head_dim; c += 64) {
    const __mmask16 mask[4] = {first_lanes(head_dim - c), first_lanes(head_dim - c - 16), first_lanes(head_dim - c - 32),
                               first_lanes(head_dim - c - 48)};
    __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    __m512 odd[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    for_each_row_pair(
        values, first, n,
        [&](std::int64_t j, const float* row, const float* next) {
          const __m512 p = _mm512_set1_ps(scores[j]), p1 = _mm512_set1_ps(scores[j + 1]);
          for (int u = 0; u < 4; ++u) {
            acc[u] = _mm512_fmadd_ps(p, _mm512_maskz_loadu_ps(mask[u], row + c + 16 * u), acc[u]);
            odd[u] = _mm512_fmadd_ps(p1, _mm512_maskz_loadu_ps(mask[u], next + c + 16 * u), odd[u]);
          }
        },
        [&](std::int64_t j, const float* row) {
          const __m512 p = _mm512_set1_ps(scores[j]);
          for (int u = 0; u < 4; ++u) acc[u] = _mm512_fmadd_ps(p, _mm512_maskz_loadu_ps(mask[u], row + c + 16 * u), acc[u]);
        });
    for (int u = 0; u < 4; ++u)
      _mm512_mask_storeu_ps(out + c + 16 * u, mask[u], _mm512_mul_ps(_mm512_add_ps(acc[u], odd[u]), inverse));
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

}  // namespace

const kernel_table& avx512_kernels() noexcept {
  static const kernel_table table{cpu_isa::avx512, dot_f32, dot_f16, dot_bf16, dot_q8_0, dot_q4_0,
                                  dot_q4_1, dot_q5_0, dot_q5_1, dot_q2_k, dot_q3_k, dot_q4_k,
                                  dot_q5_k, dot_q6_k, quantize_q8, attend, attend_tile, softmax, soft_cap, swiglu, geglu};
  return table;
}

}  // namespace chatai::engine::cpu

#pragma GCC pop_options

#endif

#pragma GCC diagnostic pop
