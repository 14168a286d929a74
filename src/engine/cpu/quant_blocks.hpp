// Block layouts of the quantized weight types (ggml's, bit for bit), half-precision
// conversions, and the engine's own layout of quantized activation rows.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace chatai::engine::cpu {

inline constexpr int qk = 32;     // elements per block of the 32-wide types and of activations
inline constexpr int qk_k = 256;  // elements per super-block of the K-quants

struct block_q4_0 {
  std::uint16_t d;          // f16 scale
  std::uint8_t qs[qk / 2];  // element j in the low nibble of qs[j], element j + 16 in the high one
};
static_assert(sizeof(block_q4_0) == 18);

struct block_q4_1 {
  std::uint16_t d;  // f16 scale
  std::uint16_t m;  // f16 offset: value = d * q + m
  std::uint8_t qs[qk / 2];
};
static_assert(sizeof(block_q4_1) == 20);

// Q5_0 and Q5_1: 4-bit low parts as in Q4_0/Q4_1, the fifth bit of element j in bit j of qh.
struct block_q5_0 {
  std::uint16_t d;           // f16 scale: value = d * (q - 16)
  std::uint8_t qh[4];        // a little-endian 32-bit word of high bits
  std::uint8_t qs[qk / 2];
};
static_assert(sizeof(block_q5_0) == 22);

struct block_q5_1 {
  std::uint16_t d;  // f16 scale
  std::uint16_t m;  // f16 offset: value = d * q + m
  std::uint8_t qh[4];
  std::uint8_t qs[qk / 2];
};
static_assert(sizeof(block_q5_1) == 24);

// The 32 levels (0..31) of a Q5_0 or Q5_1 block, in element order.
template <class Block>
void q5_levels(const Block& b, int (&q)[qk]) noexcept {
  std::uint32_t qh;
  std::memcpy(&qh, b.qh, sizeof qh);
  for (int j = 0; j < qk / 2; ++j) {
    q[j] = (b.qs[j] & 0x0f) | static_cast<int>(((qh >> j) & 1u) << 4);
    q[j + qk / 2] = (b.qs[j] >> 4) | static_cast<int>(((qh >> (j + qk / 2)) & 1u) << 4);
  }
}

struct block_q8_0 {
  std::uint16_t d;  // f16 scale
  std::int8_t qs[qk];
};
static_assert(sizeof(block_q8_0) == 34);

// 16 sub-blocks of 16 with 4-bit scales (low nibble) and mins (high nibble); 2-bit values.
// Per 128 elements: 32 bytes, element 32 j + l in bits 2 j of byte l.
struct block_q2_k {
  std::uint8_t scales[qk_k / 16];
  std::uint8_t qs[qk_k / 4];
  std::uint16_t d;     // f16 scale of the sub-block scales
  std::uint16_t dmin;  // f16 scale of the sub-block mins
};
static_assert(sizeof(block_q2_k) == 84);

// 16 sub-blocks of 16 with signed 6-bit scales (stored + 32) packed in `scales`; 3-bit values
// (q - 4): the low 2 bits as in Q2_K, the third of element 128 n + 32 j + l in bit 4 n + j of
// hmask[l].
struct block_q3_k {
  std::uint8_t hmask[qk_k / 8];
  std::uint8_t qs[qk_k / 4];
  std::uint8_t scales[12];
  std::uint16_t d;  // f16 super-block scale
};
static_assert(sizeof(block_q3_k) == 110);

// The 6-bit scale of sub-block k (0..15) of a Q3_K super-block, without its +32 bias: the low
// 4 bits in nibble k / 8 of scales[k % 8], the high 2 in bits 2 (k / 4) of scales[8 + k % 4].
constexpr int q3_k_scale(const std::uint8_t* scales, int k) noexcept {
  return (((scales[k % 8] >> (4 * (k / 8))) & 0x0f) | (((scales[8 + k % 4] >> (2 * (k / 4))) & 3) << 4)) - 32;
}

// 8 sub-blocks of 32 with 6-bit scales and mins packed in `scales`.
struct block_q4_k {
  std::uint16_t d;     // f16 scale of the sub-block scales
  std::uint16_t dmin;  // f16 scale of the sub-block mins
  std::uint8_t scales[12];
  std::uint8_t qs[qk_k / 2];  // per 64 elements: 32 bytes, low nibbles first sub-block, high nibbles second
};
static_assert(sizeof(block_q4_k) == 144);

// Q4_K with a fifth bit: element 32 j + l has it in bit j of qh[l].
struct block_q5_k {
  std::uint16_t d;
  std::uint16_t dmin;
  std::uint8_t scales[12];    // as Q4_K's
  std::uint8_t qh[qk_k / 8];
  std::uint8_t qs[qk_k / 2];  // as Q4_K's
};
static_assert(sizeof(block_q5_k) == 176);

// The 6-bit scale and min of sub-block j (0..7) of a Q4_K or Q5_K super-block.
constexpr void k4_scale_min(const std::uint8_t* q, int j, int& scale, int& min) noexcept {
  if (j < 4) {
    scale = q[j] & 63;
    min = q[j + 4] & 63;
  } else {
    scale = (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4);
    min = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

// 16 sub-blocks of 16 with signed 8-bit scales; 6-bit values split in low 4 and high 2 bits.
struct block_q6_k {
  std::uint8_t ql[qk_k / 2];
  std::uint8_t qh[qk_k / 4];
  std::int8_t scales[qk_k / 16];
  std::uint16_t d;  // f16 super-block scale
};
static_assert(sizeof(block_q6_k) == 210);

// IEEE half to float, exact for every input (subnormals, infinities, NaN).
inline float f16_to_f32(std::uint16_t h) noexcept {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exponent = (h >> 10) & 0x1fu;
  std::uint32_t mantissa = h & 0x3ffu;
  std::uint32_t bits;
  if (exponent == 0x1f) {
    bits = sign | 0x7f800000u | (mantissa << 13);
  } else if (exponent != 0) {
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {
    bits = sign;
  } else {
    int shift = 0;
    while ((mantissa & 0x400u) == 0) {
      mantissa <<= 1;
      ++shift;
    }
    bits = sign | (static_cast<std::uint32_t>(113 - shift) << 23) | ((mantissa & 0x3ffu) << 13);
  }
  return std::bit_cast<float>(bits);
}

// Float to IEEE half, rounding to nearest even; overflow gives infinity.
inline std::uint16_t f32_to_f16(float f) noexcept {
  const std::uint32_t x = std::bit_cast<std::uint32_t>(f);
  const std::uint32_t sign = (x >> 16) & 0x8000u;
  const std::uint32_t abs = x & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<std::uint16_t>(sign | 0x7e00u);  // NaN
  if (abs >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7c00u);  // rounds past 65504
  if (abs < 0x38800000u) {  // below the smallest normal half: a subnormal or zero
    const float scaled = std::bit_cast<float>(abs) * 16777216.0f;  // 2^24: units of the smallest subnormal
    const auto q = static_cast<std::uint32_t>(scaled);
    const float rest = scaled - static_cast<float>(q);
    std::uint32_t r = q;
    if (rest > 0.5f || (rest == 0.5f && (q & 1u))) ++r;
    return static_cast<std::uint16_t>(sign | r);
  }
  std::uint32_t m = abs + 0xfffu + ((abs >> 13) & 1u);  // round to nearest even at bit 13
  return static_cast<std::uint16_t>(sign | ((m - 0x38000000u) >> 13));
}

inline float bf16_to_f32(std::uint16_t h) noexcept {
  return std::bit_cast<float>(static_cast<std::uint32_t>(h) << 16);
}

// Float to bfloat16, rounding to nearest even; NaN stays NaN.
inline std::uint16_t f32_to_bf16(float f) noexcept {
  const std::uint32_t x = std::bit_cast<std::uint32_t>(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((x >> 16) | 0x40u);
  return static_cast<std::uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

// A row of n activations (n a multiple of 32) quantized to 8 bits in blocks of 32: the
// values first, then one f32 scale per block, then per block the scale times the sum of the
// block's values (what the offsets of Q4_1 and Q4_K multiply). Keeping the parts apart lets
// the kernels load 64 values at once; the scales are f32, and the sums exact, so the
// activations add no error beyond the 8-bit rounding.
struct q8_row_layout {
  static constexpr std::size_t bytes(std::int64_t n) noexcept {
    return static_cast<std::size_t>(n) + 2 * sizeof(float) * static_cast<std::size_t>(n / qk);
  }
};

struct q8_row_view {
  const std::int8_t* qs;   // [n]
  const float* d;          // [n / 32]
  const float* sums;       // [n / 32]: d * sum(qs of the block)

  static q8_row_view of(const std::byte* row, std::int64_t n) noexcept {
    const auto* qs = reinterpret_cast<const std::int8_t*>(row);
    const auto* d = reinterpret_cast<const float*>(row + n);
    return {qs, d, d + n / qk};
  }
};

}  // namespace chatai::engine::cpu
