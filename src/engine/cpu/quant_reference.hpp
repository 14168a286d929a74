// Scalar reference conversions of the weight types: dequantization (what every kernel is
// tested against), quantization (to write test models in each type) and the quantization
// of activation rows.
#pragma once

#include <cstddef>
#include <cstdint>

#include "chatai/engine/tensor_type.hpp"

namespace chatai::engine::cpu {

// Whether the CPU backend computes with weights of `type`: f32, f16, bf16, q8_0, q4_0,
// q4_1, q5_0, q5_1, q2_k, q3_k, q4_k, q5_k, q6_k.
bool is_weight_type_supported(ggml_type type) noexcept;

// Expands n elements (a multiple of the type's block size) of a supported type to f32.
// Thread safety: all functions in this header are pure and safe from any thread.
void dequantize_row(ggml_type type, const void* src, float* dst, std::int64_t n) noexcept;

// Encodes n elements (a multiple of the type's block size) in a supported type, choosing
// scales from each block's range the way ggml's reference quantizers do (round to nearest);
// Q2_K, whose four levels the range spreads too thinly, fits each sub-block by least squares.
void quantize_row(ggml_type type, const float* src, void* dst, std::int64_t n) noexcept;

// Quantizes n activations (a multiple of 32) into a q8 row (see q8_row_layout).
void quantize_q8_row_reference(const float* src, std::byte* dst, std::int64_t n) noexcept;

// Expands a q8 activation row back to f32: dst = d * q.
void dequantize_q8_row(const std::byte* src, float* dst, std::int64_t n) noexcept;

}  // namespace chatai::engine::cpu
