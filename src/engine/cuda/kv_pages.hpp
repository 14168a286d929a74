// The page allocator of the CUDA backend's KV cache: fixed-size pages handed to sequences as
// they grow and returned when they shrink or end, so sequences of any lengths share one pool.
#pragma once

#include <cstdint>
#include <vector>

namespace chatai::engine::cuda {

// Thread safety: not thread-safe; one owner (the backend) uses it.
class kv_page_pool {
 public:
  kv_page_pool(std::int32_t n_pages, std::int32_t page_tokens);

  std::int32_t n_pages() const noexcept { return n_pages_; }
  std::int32_t page_tokens() const noexcept { return page_tokens_; }
  std::int32_t free_pages() const noexcept { return static_cast<std::int32_t>(free_.size()); }
  // Pages that hold `tokens` positions.
  std::int64_t pages_for(std::int64_t tokens) const noexcept;

  // Grows `pages` (a sequence's page table) to hold `tokens` positions. Returns false, and
  // changes nothing, when the pool has too few free pages.
  bool reserve(std::vector<std::int32_t>& pages, std::int64_t tokens);
  // Returns the pages of `pages` beyond those that hold `tokens` positions.
  void shrink(std::vector<std::int32_t>& pages, std::int64_t tokens);
  // Returns every page of `pages`.
  void release(std::vector<std::int32_t>& pages) { shrink(pages, 0); }

 private:
  std::int32_t n_pages_;
  std::int32_t page_tokens_;
  std::vector<std::int32_t> free_;  // a stack: the lowest free page on top
};

}  // namespace chatai::engine::cuda
