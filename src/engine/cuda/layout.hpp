// Memory layouts the CUDA kernels and their CPU references share: the paged KV cache and the
// per-token description of a step. Plain C++, included by .cu and .cpp files alike.
#pragma once

#include <cstdint>

namespace chatai::engine::cuda {

// Keys and values of every layer live in one pool of pages; a page holds `page_tokens`
// consecutive positions of one sequence for all layers. Element (layer, page, slot, i) of
// the key (or value) pool is at offset(layer, page, slot) + i.
// Thread safety: a value type.
struct kv_layout {
  std::int64_t n_layer = 0;
  std::int64_t n_pages = 0;
  std::int64_t page_tokens = 16;
  std::int64_t kv_dim = 0;

#ifdef __CUDACC__
  __host__ __device__
#endif
  std::int64_t offset(std::int64_t layer, std::int64_t page, std::int64_t slot) const noexcept {
    return ((layer * n_pages + page) * page_tokens + slot) * kv_dim;
  }
  std::int64_t elements() const noexcept { return n_layer * n_pages * page_tokens * kv_dim; }
  std::int64_t page_bytes() const noexcept { return 2 * n_layer * page_tokens * kv_dim * 2; }  // keys and values, f16
};

// Where each token of a step goes: token t of the step has position positions[t] in its
// sequence, whose page table starts at pages + tables[t] (entry p: the page of positions
// [p * page_tokens, (p + 1) * page_tokens)).
// Thread safety: a value type of borrowed pointers.
struct step_map {
  const std::int32_t* positions = nullptr;  // [n_tokens]
  const std::int32_t* tables = nullptr;     // [n_tokens]
  const std::int32_t* pages = nullptr;      // [sum of the page tables' lengths]
};

// Keys one block of the attention kernel reads: a sequence of length n is split into
// ceil(n / attention_chunk) parts whose partial results are merged afterwards.
inline constexpr std::int64_t attention_chunk = 256;

// The largest head the attention kernel takes.
inline constexpr std::int64_t max_head_dim = 256;

}  // namespace chatai::engine::cuda
