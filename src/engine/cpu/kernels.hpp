// The CPU backend's compute kernels: dot products of weight rows with activation rows, for
// each weight type and instruction set, chosen at run time from what the CPU supports.
#pragma once

#include <cstddef>
#include <cstdint>

#include "chatai/engine/cpu_backend.hpp"
#include "chatai/engine/tensor_type.hpp"

namespace chatai::engine::cpu {

// What a weight type's kernel takes as activations: f32 rows, or q8 rows (q8_row_layout).
enum class activation_kind { f32, q8 };

// The most activation rows one call of a row_dot_fn handles: the weight row is unpacked
// once for all of them.
inline constexpr int max_dot_columns = 4;

// out[j * out_stride] = dot(w, activation row j) for j < n_columns (1..max_dot_columns),
// where activation row j starts at x + j * x_stride and w is one weight row of n elements.
using row_dot_fn = void (*)(std::int64_t n, const void* w, const std::byte* x, std::size_t x_stride,
                            int n_columns, float* out, std::size_t out_stride);

// Quantizes n activations (a multiple of 32) into a q8 row.
using quantize_q8_fn = void (*)(const float* x, std::byte* out, std::int64_t n);

// out[0, head_dim) = sum over j < n of softmax_j(scale * q . k_j) * v_j, where k_j and v_j
// start at keys + j * kv_stride and values + j * kv_stride; scores is scratch for n floats.
using attention_fn = void (*)(std::int64_t head_dim, const float* q, const float* keys, const float* values,
                              std::int64_t kv_stride, std::int64_t n, float scale, float* scores, float* out);

struct weight_kernel {
  activation_kind activations = activation_kind::f32;
  row_dot_fn dot = nullptr;  // nullptr for types the backend does not compute with
};

// One instruction set's kernels.
struct kernel_table {
  cpu_isa isa = cpu_isa::portable;
  row_dot_fn dot_f32 = nullptr;
  row_dot_fn dot_f16 = nullptr;
  row_dot_fn dot_bf16 = nullptr;
  row_dot_fn dot_q8_0 = nullptr;
  row_dot_fn dot_q4_0 = nullptr;
  row_dot_fn dot_q4_1 = nullptr;
  row_dot_fn dot_q4_k = nullptr;
  row_dot_fn dot_q6_k = nullptr;
  quantize_q8_fn quantize_q8 = nullptr;
  attention_fn attend = nullptr;

  // The kernel for weights of `type`.
  weight_kernel for_type(ggml_type type) const noexcept;
};

// The kernels of `isa`, which the CPU must support.
const kernel_table& kernels_for(cpu_isa isa) noexcept;

// The tables of each instruction set, defined in kernels_<isa>.cpp.
const kernel_table& portable_kernels() noexcept;
const kernel_table& avx2_kernels() noexcept;
const kernel_table& avx512_kernels() noexcept;

}  // namespace chatai::engine::cpu
