// The CPU backend's compute kernels: dot products of weight rows with activation rows, for
// each weight type and instruction set, chosen at run time from what the CPU supports.
#pragma once

#include <algorithm>
#include <cmath>
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

// Where attention finds the keys or the values of positions 0..n-1: in pages of page_rows
// positions, position j at pages[j / page_rows] + offset + (j % page_rows) * stride. A
// contiguous cache is one page of n rows.
struct kv_rows {
  const float* const* pages = nullptr;
  std::size_t offset = 0;      // floats from a page's start to this head's first row
  std::int64_t page_rows = 0;
  std::int64_t stride = 0;     // floats from one position's row to the next
};

// Where attention finds the keys of positions 0..n-1, stored by dimension within a page (so
// that the scores of a page's positions come out of one vector per dimension, without a sum
// across lanes): component i of position j's key at
// pages[j / page_rows] + offset + i * page_rows + j % page_rows.
struct kv_columns {
  const float* const* pages = nullptr;
  std::size_t offset = 0;  // floats from a page's start to this head's first component
  std::int64_t page_rows = 0;
};

// out[0, head_dim) = sum over first <= j < n of softmax_j(s_j) * v_j, with k_j position j's key
// in `keys`, v_j its row in `values`, and s_j = scale * q . k_j, or softcap * tanh(scale * q .
// k_j / softcap) when softcap > 0 (Gemma 2); positions before `first` are outside a sliding
// window. scores is scratch for n floats (rounded up to a multiple of 16), indexed by position.
using attention_fn = void (*)(std::int64_t head_dim, const float* q, const kv_columns& keys, const kv_rows& values,
                              std::int64_t first, std::int64_t n, float scale, float softcap, float* scores,
                              float* out);

// One query of an attention tile: its vector and output (head_dim floats each) and the
// positions [first, n) it attends to.
struct tile_query {
  const float* q = nullptr;
  float* out = nullptr;
  std::int64_t first = 0;
  std::int64_t n = 0;
};

// What attention_fn computes, for `count` queries that share their keys and values (the heads
// of one KV group over a run of a sequence's tokens): each page of keys and values is read
// once for all of them, with an online softmax per query. scratch holds 2 * count floats plus
// what attention_fn's scores need for the longest query.
using attention_tile_fn = void (*)(std::int64_t head_dim, const tile_query* queries, std::int64_t count,
                                   const kv_columns& keys, const kv_rows& values, float scale, float softcap,
                                   float* scratch);

// The tile one query at a time through `attend`: the portable kernels, and page sizes the
// vector kernels do not tile.
inline void attend_each(attention_fn attend, std::int64_t head_dim, const tile_query* queries, std::int64_t count,
                        const kv_columns& keys, const kv_rows& values, float scale, float softcap, float* scratch) {
  for (std::int64_t i = 0; i < count; ++i) {
    const tile_query& t = queries[i];
    attend(head_dim, t.q, keys, values, t.first, t.n, scale, softcap, scratch + 2 * count, t.out);
  }
}

// A tile's online softmax state in scratch (running maxima, then sums), set out with zeroed
// outputs; the positions [first, end) any of its queries attends to.
struct tile_state {
  float* run_max;
  float* run_sum;
  std::int64_t first = INT64_MAX;
  std::int64_t end = 0;

  tile_state(std::int64_t head_dim, const tile_query* queries, std::int64_t count, float* scratch)
      : run_max(scratch), run_sum(scratch + count) {
    for (std::int64_t i = 0; i < count; ++i) {
      run_max[i] = -INFINITY;
      run_sum[i] = 0.0f;
      std::fill(queries[i].out, queries[i].out + head_dim, 0.0f);
      first = std::min(first, queries[i].first);
      end = std::max(end, queries[i].n);
    }
  }

  // Divides each output by its query's sum.
  void finish(std::int64_t head_dim, const tile_query* queries, std::int64_t count) const {
    for (std::int64_t i = 0; i < count; ++i) {
      const float inverse = 1.0f / run_sum[i];
      for (std::int64_t c = 0; c < head_dim; ++c) queries[i].out[c] *= inverse;
    }
  }
};

// scores[j] = scale * q . k_j for the positions of the pages that hold [first, n), the plain
// way (any page size).
inline void score_columns(std::int64_t head_dim, const float* q, const kv_columns& keys, std::int64_t first,
                          std::int64_t n, float scale, float* scores) {
  for (std::int64_t p = first / keys.page_rows, j0 = p * keys.page_rows; j0 < n; j0 += keys.page_rows, ++p) {
    const float* base = keys.pages[p] + keys.offset;
    const std::int64_t rows = std::min(keys.page_rows, n - j0);
    float* s = scores + j0;
    for (std::int64_t r = 0; r < rows; ++r) s[r] = 0.0f;
    for (std::int64_t i = 0; i < head_dim; ++i) {
      const float qi = q[i];
      const float* column = base + i * keys.page_rows;
      for (std::int64_t r = 0; r < rows; ++r) s[r] += qi * column[r];
    }
    for (std::int64_t r = 0; r < rows; ++r) s[r] *= scale;
  }
}

// Calls fn(j, row) for the rows of positions first..n-1, a page at a time.
template <class Fn>
inline void for_each_row(const kv_rows& rows, std::int64_t first, std::int64_t n, Fn&& fn) {
  std::int64_t j = first;
  for (const float* const* page = rows.pages + first / rows.page_rows; j < n; ++page) {
    const float* row = *page + rows.offset + (j % rows.page_rows) * static_cast<std::int64_t>(rows.stride);
    const std::int64_t end = std::min(n, (j / rows.page_rows + 1) * rows.page_rows);
    for (; j < end; ++j, row += rows.stride) fn(j, row);
  }
}

// The same two rows at a time within a page: pair(j, row j, row j + 1), then one(j, row j) for
// a page's odd row out, so that a kernel keeps two independent sums in flight.
template <class Pair, class One>
inline void for_each_row_pair(const kv_rows& rows, std::int64_t first, std::int64_t n, Pair&& pair, One&& one) {
  std::int64_t j = first;
  for (const float* const* page = rows.pages + first / rows.page_rows; j < n; ++page) {
    const float* row = *page + rows.offset + (j % rows.page_rows) * static_cast<std::int64_t>(rows.stride);
    const std::int64_t end = std::min(n, (j / rows.page_rows + 1) * rows.page_rows);
    for (; j + 1 < end; j += 2, row += 2 * rows.stride) pair(j, row, row + rows.stride);
    if (j < end) {
      one(j, row);
      ++j;
    }
  }
}

// x[i] = e^((x[i] - max) * scale) for i < n, with max the largest x and scale > 0; returns their
// sum. An argument below -87 (a -inf logit among them) gives exactly 0.
using softmax_fn = float (*)(float* x, std::int64_t n, float scale);

// x[i] = cap * tanh(x[i] / cap) for i < n (Gemma's soft caps).
using soft_cap_fn = void (*)(float* x, std::int64_t n, float cap);

// gate[i] = act(gate[i]) * up[i] for i < n: SiLU (SwiGLU) or GELU by its tanh approximation
// (GeGLU).
using gated_fn = void (*)(float* gate, const float* up, std::int64_t n);

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
  row_dot_fn dot_q5_0 = nullptr;
  row_dot_fn dot_q5_1 = nullptr;
  row_dot_fn dot_q2_k = nullptr;
  row_dot_fn dot_q3_k = nullptr;
  row_dot_fn dot_q4_k = nullptr;
  row_dot_fn dot_q5_k = nullptr;
  row_dot_fn dot_q6_k = nullptr;
  quantize_q8_fn quantize_q8 = nullptr;
  attention_fn attend = nullptr;
  attention_tile_fn attend_tile = nullptr;
  softmax_fn softmax = nullptr;
  soft_cap_fn soft_cap = nullptr;
  gated_fn swiglu = nullptr;
  gated_fn geglu = nullptr;

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
