// Dequantization shared by the kernels that read weights: 32 consecutive elements of a
// weight row expanded to f32 in registers. Host code too, so that it is tested on machines
// without a GPU; needs the CUDA headers.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <bit>
#include <cstddef>
#include <cstdint>

#include "../cpu/quant_blocks.hpp"
#include "chatai/engine/tensor_type.hpp"

#define CHATAI_HOST_DEVICE __host__ __device__ __forceinline__

namespace chatai::engine::cuda {

// A read through the read-only data cache on the device.
template <class T>
CHATAI_HOST_DEVICE T load(const T* p) {
#ifdef __CUDA_ARCH__
  return __ldg(p);
#else
  return *p;
#endif
}

CHATAI_HOST_DEVICE float half_bits_to_float(std::uint16_t bits) { return __half2float(__ushort_as_half(bits)); }
CHATAI_HOST_DEVICE float bf16_bits_to_float(std::uint32_t bits) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(bits << 16);
#else
  return std::bit_cast<float>(bits << 16);
#endif
}

// v[0, 32) = elements [32 c, 32 c + 32) of the weight row that starts at `row`.
template <ggml_type T>
CHATAI_HOST_DEVICE void dequantize32(const std::byte* row, std::int64_t c, float (&v)[32]);

template <>
CHATAI_HOST_DEVICE void dequantize32<ggml_type::f32>(const std::byte* row, std::int64_t c, float (&v)[32]) {
  const float4* p = reinterpret_cast<const float4*>(row) + c * 8;  // [8 × 4]
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const float4 f = load(p + i);
    v[4 * i] = f.x, v[4 * i + 1] = f.y, v[4 * i + 2] = f.z, v[4 * i + 3] = f.w;
  }
}

template <>
CHATAI_HOST_DEVICE void dequantize32<ggml_type::f16>(const std::byte* row, std::int64_t c, float (&v)[32]) {
  const uint4* p = reinterpret_cast<const uint4*>(row) + c * 4;  // [4 × 8 halves]
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const uint4 u = load(p + i);
    const std::uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      v[8 * i + 2 * j] = half_bits_to_float(static_cast<std::uint16_t>(w[j] & 0xffffu));
      v[8 * i + 2 * j + 1] = half_bits_to_float(static_cast<std::uint16_t>(w[j] >> 16));
    }
  }
}

template <>
CHATAI_HOST_DEVICE void dequantize32<ggml_type::bf16>(const std::byte* row, std::int64_t c, float (&v)[32]) {
  const uint4* p = reinterpret_cast<const uint4*>(row) + c * 4;  // [4 × 8 bf16]
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const uint4 u = load(p + i);
    const std::uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      v[8 * i + 2 * j] = bf16_bits_to_float(w[j] & 0xffffu);
      v[8 * i + 2 * j + 1] = bf16_bits_to_float(w[j] >> 16);
    }
  }
}

template <>
CHATAI_HOST_DEVICE void dequantize32<ggml_type::q8_0>(const std::byte* row, std::int64_t c, float (&v)[32]) {
  const auto* b = reinterpret_cast<const cpu::block_q8_0*>(row) + c;
  const float d = half_bits_to_float(load(&b->d));
  const auto* qs = reinterpret_cast<const std::uint16_t*>(b->qs);  // 2-byte aligned: [16 × 2 int8]
#pragma unroll
  for (int i = 0; i < 16; ++i) {
    const std::uint16_t u = load(qs + i);
    v[2 * i] = d * static_cast<float>(static_cast<std::int8_t>(u & 0xff));
    v[2 * i + 1] = d * static_cast<float>(static_cast<std::int8_t>(u >> 8));
  }
}

template <>
CHATAI_HOST_DEVICE void dequantize32<ggml_type::q4_0>(const std::byte* row, std::int64_t c, float (&v)[32]) {
  const auto* b = reinterpret_cast<const cpu::block_q4_0*>(row) + c;
  const float d = half_bits_to_float(load(&b->d));
  const auto* qs = reinterpret_cast<const std::uint16_t*>(b->qs);  // [8 × 2 bytes]
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const std::uint16_t u = load(qs + i);
    v[2 * i] = d * static_cast<float>(static_cast<int>(u & 0x0f) - 8);
    v[2 * i + 1] = d * static_cast<float>(static_cast<int>((u >> 8) & 0x0f) - 8);
    v[2 * i + 16] = d * static_cast<float>(static_cast<int>((u >> 4) & 0x0f) - 8);
    v[2 * i + 17] = d * static_cast<float>(static_cast<int>(u >> 12) - 8);
  }
}

template <>
CHATAI_HOST_DEVICE void dequantize32<ggml_type::q4_1>(const std::byte* row, std::int64_t c, float (&v)[32]) {
  const auto* b = reinterpret_cast<const cpu::block_q4_1*>(row) + c;
  const float d = half_bits_to_float(load(&b->d));
  const float m = half_bits_to_float(load(&b->m));
  const auto* qs = reinterpret_cast<const std::uint32_t*>(b->qs);  // 4-byte aligned: [4 × 4 bytes]
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const std::uint32_t u = load(qs + i);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const std::uint32_t byte = (u >> (8 * j)) & 0xffu;
      v[4 * i + j] = d * static_cast<float>(byte & 0x0f) + m;
      v[4 * i + j + 16] = d * static_cast<float>(byte >> 4) + m;
    }
  }
}

// Level e of a Q5_0 or Q5_1 block: its low nibble and bit e of the high bits.
CHATAI_HOST_DEVICE int q5_level(std::uint32_t nibble, std::uint32_t high_bits, int e) {
  return static_cast<int>((nibble & 0x0fu) | (((high_bits >> e) & 1u) << 4));
}

template <>
CHATAI_HOST_DEVICE void dequantize32<ggml_type::q5_0>(const std::byte* row, std::int64_t c, float (&v)[32]) {
  const auto* b = reinterpret_cast<const cpu::block_q5_0*>(row) + c;  // 22 bytes: 2-byte aligned
  const float d = half_bits_to_float(load(&b->d));
  const auto* qh = reinterpret_cast<const std::uint16_t*>(b->qh);  // [2 × 16 bits]
  const std::uint32_t high = load(qh) | (static_cast<std::uint32_t>(load(qh + 1)) << 16);
  const auto* qs = reinterpret_cast<const std::uint16_t*>(b->qs);  // [8 × 2 bytes]
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const std::uint32_t u = load(qs + i);
    v[2 * i] = d * static_cast<float>(q5_level(u, high, 2 * i) - 16);
    v[2 * i + 1] = d * static_cast<float>(q5_level(u >> 8, high, 2 * i + 1) - 16);
    v[2 * i + 16] = d * static_cast<float>(q5_level(u >> 4, high, 2 * i + 16) - 16);
    v[2 * i + 17] = d * static_cast<float>(q5_level(u >> 12, high, 2 * i + 17) - 16);
  }
}

template <>
CHATAI_HOST_DEVICE void dequantize32<ggml_type::q5_1>(const std::byte* row, std::int64_t c, float (&v)[32]) {
  const auto* b = reinterpret_cast<const cpu::block_q5_1*>(row) + c;  // 24 bytes: 8-byte aligned
  const float d = half_bits_to_float(load(&b->d));
  const float m = half_bits_to_float(load(&b->m));
  const std::uint32_t high = load(reinterpret_cast<const std::uint32_t*>(b->qh));
  const auto* qs = reinterpret_cast<const std::uint32_t*>(b->qs);  // [4 × 4 bytes]
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const std::uint32_t u = load(qs + i);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const std::uint32_t byte = u >> (8 * j);
      v[4 * i + j] = d * static_cast<float>(q5_level(byte, high, 4 * i + j)) + m;
      v[4 * i + j + 16] = d * static_cast<float>(q5_level(byte >> 4, high, 4 * i + j + 16)) + m;
    }
  }
}

template <>
CHATAI_HOST_DEVICE void dequantize32<ggml_type::q2_k>(const std::byte* row, std::int64_t c, float (&v)[32]) {
  const auto* b = reinterpret_cast<const cpu::block_q2_k*>(row) + c / 8;  // 84 bytes: 4-byte aligned
  const int k = static_cast<int>(c % 8);  // elements [32 k, 32 k + 32): bits 2 (k % 4) of 32 bytes
  const float d = half_bits_to_float(load(&b->d));
  const float dmin = half_bits_to_float(load(&b->dmin));
  const auto* qs = reinterpret_cast<const std::uint32_t*>(b->qs + 32 * (k / 4));  // [8 × 4 bytes]
  const int shift = 2 * (k % 4);
#pragma unroll
  for (int g = 0; g < 2; ++g) {
    const std::uint8_t sc = load(b->scales + 2 * k + g);
    const float dl = d * static_cast<float>(sc & 0x0f);
    const float ml = dmin * static_cast<float>(sc >> 4);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const std::uint32_t u = load(qs + 4 * g + i);
#pragma unroll
      for (int j = 0; j < 4; ++j) v[16 * g + 4 * i + j] = dl * static_cast<float>((u >> (8 * j + shift)) & 3u) - ml;
    }
  }
}

// The signed 6-bit scale of sub-block k (0..15) of a Q3_K super-block (see cpu::q3_k_scale).
CHATAI_HOST_DEVICE int q3_k_scale(const std::uint8_t* scales, int k) {
  const int low = (load(scales + k % 8) >> (4 * (k / 8))) & 0x0f;
  const int high = (load(scales + 8 + k % 4) >> (2 * (k / 4))) & 3;
  return (low | (high << 4)) - 32;
}

template <>
CHATAI_HOST_DEVICE void dequantize32<ggml_type::q3_k>(const std::byte* row, std::int64_t c, float (&v)[32]) {
  const auto* b = reinterpret_cast<const cpu::block_q3_k*>(row) + c / 8;  // 110 bytes: 2-byte aligned
  const int k = static_cast<int>(c % 8);  // elements [32 k, 32 k + 32): their third bits are bit k of hmask
  const float d = half_bits_to_float(load(&b->d));
  const auto* qs = reinterpret_cast<const std::uint16_t*>(b->qs + 32 * (k / 4));  // [16 × 2 bytes]
  const auto* hm = reinterpret_cast<const std::uint16_t*>(b->hmask);             // [16 × 2 bytes]
  const int shift = 2 * (k % 4);
  const float dl[2] = {d * static_cast<float>(q3_k_scale(b->scales, 2 * k)),
                       d * static_cast<float>(q3_k_scale(b->scales, 2 * k + 1))};
#pragma unroll
  for (int i = 0; i < 16; ++i) {
    const std::uint32_t q = load(qs + i), h = load(hm + i);
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      const int low = static_cast<int>((q >> (8 * j + shift)) & 3u);
      const int high = static_cast<int>((h >> (8 * j + k)) & 1u);
      v[2 * i + j] = dl[i / 8] * static_cast<float>(low + 4 * high - 4);
    }
  }
}

// The 6-bit scale and min of sub-block j (0..7) of a Q4_K or Q5_K super-block.
CHATAI_HOST_DEVICE void q4_k_scale_min(int j, const std::uint8_t* q, int& scale, int& min) {
  if (j < 4) {
    scale = load(q + j) & 63;
    min = load(q + j + 4) & 63;
  } else {
    scale = (load(q + j + 4) & 0x0f) | ((load(q + j - 4) >> 6) << 4);
    min = (load(q + j + 4) >> 4) | ((load(q + j) >> 6) << 4);
  }
}

// The scale and min of sub-block j (0..7) of a Q4_K or Q5_K super-block b, in f32.
template <class Block>
CHATAI_HOST_DEVICE void k_sub_block_scale_min(const Block* b, int j, float& d, float& m) {
  int scale, min;
  q4_k_scale_min(j, b->scales, scale, min);
  d = half_bits_to_float(load(&b->d)) * static_cast<float>(scale);
  m = half_bits_to_float(load(&b->dmin)) * static_cast<float>(min);
}

template <>
CHATAI_HOST_DEVICE void dequantize32<ggml_type::q4_k>(const std::byte* row, std::int64_t c, float (&v)[32]) {
  const auto* b = reinterpret_cast<const cpu::block_q4_k*>(row) + c / 8;
  const int j = static_cast<int>(c % 8);  // sub-block
  float d, m;
  k_sub_block_scale_min(b, j, d, m);
  const uint4* qs = reinterpret_cast<const uint4*>(b->qs + 32 * (j / 2));  // 16-byte aligned: [2 × 16 bytes]
  const int shift = 4 * (j % 2);
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const uint4 u = load(qs + i);
    const std::uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int k = 0; k < 16; ++k) {
      const std::uint32_t byte = (w[k / 4] >> (8 * (k % 4))) & 0xffu;
      v[16 * i + k] = d * static_cast<float>((byte >> shift) & 0x0f) - m;
    }
  }
}

template <>
CHATAI_HOST_DEVICE void dequantize32<ggml_type::q5_k>(const std::byte* row, std::int64_t c, float (&v)[32]) {
  const auto* b = reinterpret_cast<const cpu::block_q5_k*>(row) + c / 8;  // 176 bytes: 16-byte aligned
  const int j = static_cast<int>(c % 8);  // sub-block
  float d, m;
  k_sub_block_scale_min(b, j, d, m);
  const uint4* qs = reinterpret_cast<const uint4*>(b->qs + 32 * (j / 2));  // [2 × 16 bytes]
  const uint4* qh = reinterpret_cast<const uint4*>(b->qh);                 // [2 × 16 bytes]
  const int shift = 4 * (j % 2);
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const uint4 u = load(qs + i), h = load(qh + i);
    const std::uint32_t w[4] = {u.x, u.y, u.z, u.w};
    const std::uint32_t hw[4] = {h.x, h.y, h.z, h.w};
#pragma unroll
    for (int k = 0; k < 16; ++k) {
      const std::uint32_t low = (w[k / 4] >> (8 * (k % 4) + shift)) & 0x0fu;
      const std::uint32_t high = (hw[k / 4] >> (8 * (k % 4) + j)) & 1u;
      v[16 * i + k] = d * static_cast<float>(low | (high << 4)) - m;
    }
  }
}

template <>
CHATAI_HOST_DEVICE void dequantize32<ggml_type::q6_k>(const std::byte* row, std::int64_t c, float (&v)[32]) {
  const auto* b = reinterpret_cast<const cpu::block_q6_k*>(row) + c / 8;
  const int j = static_cast<int>(c % 8);
  const int half = j / 4, quarter = j % 4;  // elements [128 half + 32 quarter, + 32)
  const float d = half_bits_to_float(load(&b->d));
  const auto* ql = reinterpret_cast<const std::uint16_t*>(b->ql + 64 * half + 32 * (quarter % 2));  // [16 × 2]
  const auto* qh = reinterpret_cast<const std::uint16_t*>(b->qh + 32 * half);                        // [16 × 2]
  const int s0 = load(b->scales + 8 * half + 2 * quarter);
  const int s1 = load(b->scales + 8 * half + 2 * quarter + 1);
  const int low_shift = 4 * (quarter / 2), high_shift = 2 * quarter;
#pragma unroll
  for (int i = 0; i < 16; ++i) {
    const std::uint16_t l = load(ql + i), h = load(qh + i);
#pragma unroll
    for (int k = 0; k < 2; ++k) {
      const int lo = ((l >> (8 * k)) >> low_shift) & 0x0f;
      const int hi = ((h >> (8 * k)) >> high_shift) & 0x03;
      const int e = 2 * i + k;
      v[e] = d * static_cast<float>((e < 16 ? s0 : s1) * ((lo | (hi << 4)) - 32));
    }
  }
}

// Four elements for kernels whose eight lanes on one 32-element chunk read neighbouring bytes:
// v[0, 4) = elements [32 c + 4 q, 32 c + 4 q + 4) of the row, q in 0..lanes_per_chunk - 1.
// The same values as dequantize32's, bit for bit.
inline constexpr int lanes_per_chunk = 8;
template <ggml_type T>
CHATAI_HOST_DEVICE void dequantize4(const std::byte* row, std::int64_t c, int q, float (&v)[4]);

// Four bytes from a 2-byte aligned address, little-endian.
CHATAI_HOST_DEVICE std::uint32_t load_pair(const std::uint8_t* p) {
  const auto* h = reinterpret_cast<const std::uint16_t*>(p);
  return load(h) | (static_cast<std::uint32_t>(load(h + 1)) << 16);
}

// Byte i (0..3) of a little-endian word.
CHATAI_HOST_DEVICE std::uint32_t byte_of(std::uint32_t word, int i) { return (word >> (8 * i)) & 0xffu; }

template <>
CHATAI_HOST_DEVICE void dequantize4<ggml_type::f32>(const std::byte* row, std::int64_t c, int q, float (&v)[4]) {
  const float4 f = load(reinterpret_cast<const float4*>(row) + c * 8 + q);
  v[0] = f.x, v[1] = f.y, v[2] = f.z, v[3] = f.w;
}

template <>
CHATAI_HOST_DEVICE void dequantize4<ggml_type::f16>(const std::byte* row, std::int64_t c, int q, float (&v)[4]) {
  const uint2 u = load(reinterpret_cast<const uint2*>(row) + c * 8 + q);  // [4 halves]
  v[0] = half_bits_to_float(static_cast<std::uint16_t>(u.x & 0xffffu));
  v[1] = half_bits_to_float(static_cast<std::uint16_t>(u.x >> 16));
  v[2] = half_bits_to_float(static_cast<std::uint16_t>(u.y & 0xffffu));
  v[3] = half_bits_to_float(static_cast<std::uint16_t>(u.y >> 16));
}

template <>
CHATAI_HOST_DEVICE void dequantize4<ggml_type::bf16>(const std::byte* row, std::int64_t c, int q, float (&v)[4]) {
  const uint2 u = load(reinterpret_cast<const uint2*>(row) + c * 8 + q);  // [4 bf16]
  v[0] = bf16_bits_to_float(u.x & 0xffffu);
  v[1] = bf16_bits_to_float(u.x >> 16);
  v[2] = bf16_bits_to_float(u.y & 0xffffu);
  v[3] = bf16_bits_to_float(u.y >> 16);
}

template <>
CHATAI_HOST_DEVICE void dequantize4<ggml_type::q8_0>(const std::byte* row, std::int64_t c, int q, float (&v)[4]) {
  const auto* b = reinterpret_cast<const cpu::block_q8_0*>(row) + c;
  const float d = half_bits_to_float(load(&b->d));
  const std::uint32_t u = load_pair(reinterpret_cast<const std::uint8_t*>(b->qs) + 4 * q);
#pragma unroll
  for (int i = 0; i < 4; ++i) v[i] = d * static_cast<float>(static_cast<std::int8_t>(byte_of(u, i)));
}

// Elements [4 q, 4 q + 4) of a 32-element block with 16 bytes of nibbles (element j low in
// byte j, element j + 16 high): the word of bytes [4 (q % 4), + 4) and the shift of q's half.
struct nibble_word {
  std::uint32_t word;
  int shift;
};
CHATAI_HOST_DEVICE nibble_word nibbles_2byte_aligned(const std::uint8_t* qs, int q) {
  return {load_pair(qs + 4 * (q % 4)), 4 * (q / 4)};
}
CHATAI_HOST_DEVICE nibble_word nibbles_4byte_aligned(const std::uint8_t* qs, int q) {
  return {load(reinterpret_cast<const std::uint32_t*>(qs + 4 * (q % 4))), 4 * (q / 4)};
}

template <>
CHATAI_HOST_DEVICE void dequantize4<ggml_type::q4_0>(const std::byte* row, std::int64_t c, int q, float (&v)[4]) {
  const auto* b = reinterpret_cast<const cpu::block_q4_0*>(row) + c;
  const float d = half_bits_to_float(load(&b->d));
  const nibble_word n = nibbles_2byte_aligned(b->qs, q);
#pragma unroll
  for (int i = 0; i < 4; ++i) v[i] = d * static_cast<float>(static_cast<int>((byte_of(n.word, i) >> n.shift) & 0x0f) - 8);
}

template <>
CHATAI_HOST_DEVICE void dequantize4<ggml_type::q4_1>(const std::byte* row, std::int64_t c, int q, float (&v)[4]) {
  const auto* b = reinterpret_cast<const cpu::block_q4_1*>(row) + c;
  const float d = half_bits_to_float(load(&b->d));
  const float m = half_bits_to_float(load(&b->m));
  const nibble_word n = nibbles_4byte_aligned(b->qs, q);
#pragma unroll
  for (int i = 0; i < 4; ++i) v[i] = d * static_cast<float>((byte_of(n.word, i) >> n.shift) & 0x0f) + m;
}

template <>
CHATAI_HOST_DEVICE void dequantize4<ggml_type::q5_0>(const std::byte* row, std::int64_t c, int q, float (&v)[4]) {
  const auto* b = reinterpret_cast<const cpu::block_q5_0*>(row) + c;
  const float d = half_bits_to_float(load(&b->d));
  const std::uint32_t high = load_pair(b->qh);
  const nibble_word n = nibbles_2byte_aligned(b->qs, q);
#pragma unroll
  for (int i = 0; i < 4; ++i) v[i] = d * static_cast<float>(q5_level(byte_of(n.word, i) >> n.shift, high, 4 * q + i) - 16);
}

template <>
CHATAI_HOST_DEVICE void dequantize4<ggml_type::q5_1>(const std::byte* row, std::int64_t c, int q, float (&v)[4]) {
  const auto* b = reinterpret_cast<const cpu::block_q5_1*>(row) + c;
  const float d = half_bits_to_float(load(&b->d));
  const float m = half_bits_to_float(load(&b->m));
  const std::uint32_t high = load(reinterpret_cast<const std::uint32_t*>(b->qh));
  const nibble_word n = nibbles_4byte_aligned(b->qs, q);
#pragma unroll
  for (int i = 0; i < 4; ++i) v[i] = d * static_cast<float>(q5_level(byte_of(n.word, i) >> n.shift, high, 4 * q + i)) + m;
}

// In the K-quants, chunk c is sub-range k = c % 8 of super-block c / 8; element e of the
// chunk is byte e of its 32 bytes of low bits, and e / 16 picks its 16-element scale.

template <>
CHATAI_HOST_DEVICE void dequantize4<ggml_type::q2_k>(const std::byte* row, std::int64_t c, int q, float (&v)[4]) {
  const auto* b = reinterpret_cast<const cpu::block_q2_k*>(row) + c / 8;
  const int k = static_cast<int>(c % 8);
  const std::uint8_t sc = load(b->scales + 2 * k + q / 4);
  const float dl = half_bits_to_float(load(&b->d)) * static_cast<float>(sc & 0x0f);
  const float ml = half_bits_to_float(load(&b->dmin)) * static_cast<float>(sc >> 4);
  const std::uint32_t u = load(reinterpret_cast<const std::uint32_t*>(b->qs + 32 * (k / 4) + 4 * q));
  const int shift = 2 * (k % 4);
#pragma unroll
  for (int i = 0; i < 4; ++i) v[i] = dl * static_cast<float>((byte_of(u, i) >> shift) & 3u) - ml;
}

template <>
CHATAI_HOST_DEVICE void dequantize4<ggml_type::q3_k>(const std::byte* row, std::int64_t c, int q, float (&v)[4]) {
  const auto* b = reinterpret_cast<const cpu::block_q3_k*>(row) + c / 8;
  const int k = static_cast<int>(c % 8);
  const float dl = half_bits_to_float(load(&b->d)) * static_cast<float>(q3_k_scale(b->scales, 2 * k + q / 4));
  const std::uint32_t low = load_pair(b->qs + 32 * (k / 4) + 4 * q);
  const std::uint32_t high = load_pair(b->hmask + 4 * q);
  const int shift = 2 * (k % 4);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int l = static_cast<int>((byte_of(low, i) >> shift) & 3u);
    const int h = static_cast<int>((byte_of(high, i) >> k) & 1u);
    v[i] = dl * static_cast<float>(l + 4 * h - 4);
  }
}

template <>
CHATAI_HOST_DEVICE void dequantize4<ggml_type::q4_k>(const std::byte* row, std::int64_t c, int q, float (&v)[4]) {
  const auto* b = reinterpret_cast<const cpu::block_q4_k*>(row) + c / 8;
  const int j = static_cast<int>(c % 8);
  float d, m;
  k_sub_block_scale_min(b, j, d, m);
  const std::uint32_t u = load(reinterpret_cast<const std::uint32_t*>(b->qs + 32 * (j / 2) + 4 * q));
  const int shift = 4 * (j % 2);
#pragma unroll
  for (int i = 0; i < 4; ++i) v[i] = d * static_cast<float>((byte_of(u, i) >> shift) & 0x0f) - m;
}

template <>
CHATAI_HOST_DEVICE void dequantize4<ggml_type::q5_k>(const std::byte* row, std::int64_t c, int q, float (&v)[4]) {
  const auto* b = reinterpret_cast<const cpu::block_q5_k*>(row) + c / 8;
  const int j = static_cast<int>(c % 8);
  float d, m;
  k_sub_block_scale_min(b, j, d, m);
  const std::uint32_t u = load(reinterpret_cast<const std::uint32_t*>(b->qs + 32 * (j / 2) + 4 * q));
  const std::uint32_t h = load(reinterpret_cast<const std::uint32_t*>(b->qh + 4 * q));
  const int shift = 4 * (j % 2);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const std::uint32_t low = (byte_of(u, i) >> shift) & 0x0fu;
    const std::uint32_t high = (byte_of(h, i) >> j) & 1u;
    v[i] = d * static_cast<float>(low | (high << 4)) - m;
  }
}

template <>
CHATAI_HOST_DEVICE void dequantize4<ggml_type::q6_k>(const std::byte* row, std::int64_t c, int q, float (&v)[4]) {
  const auto* b = reinterpret_cast<const cpu::block_q6_k*>(row) + c / 8;
  const int j = static_cast<int>(c % 8);
  const int half = j / 4, quarter = j % 4;  // elements [128 half + 32 quarter, + 32)
  const float d = half_bits_to_float(load(&b->d));
  const std::uint32_t low = load_pair(b->ql + 64 * half + 32 * (quarter % 2) + 4 * q);
  const std::uint32_t high = load_pair(b->qh + 32 * half + 4 * q);
  const int s = load(b->scales + 8 * half + 2 * quarter + q / 4);
  const int low_shift = 4 * (quarter / 2), high_shift = 2 * quarter;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int lo = static_cast<int>(byte_of(low, i) >> low_shift) & 0x0f;
    const int hi = static_cast<int>(byte_of(high, i) >> high_shift) & 0x03;
    v[i] = d * static_cast<float>(s * ((lo | (hi << 4)) - 32));
  }
}

}  // namespace chatai::engine::cuda
