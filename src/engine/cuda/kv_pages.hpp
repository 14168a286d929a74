// The page allocator of the CUDA backend's KV cache: fixed-size pages handed to sequences as
// they grow and returned when they shrink or end, so sequences of any lengths share one pool.
// A page may be in several page tables (a shared prefix): it is counted, and free again when
// the last table lets it go.
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

  // Appends the first `n` pages of `from` to `to`, which holds them too from now on.
  void share(const std::vector<std::int32_t>& from, std::size_t n, std::vector<std::int32_t>& to);
  // Whether another page table holds `page` too.
  bool shared(std::int32_t page) const noexcept { return refs_[static_cast<std::size_t>(page)] > 1; }
  // Puts a free page in place of pages[i] (whose other holders keep it); the caller copies the
  // contents. Returns the old page, or -1, changing nothing, when no page is free.
  std::int32_t replace(std::vector<std::int32_t>& pages, std::size_t i);

 private:
  void let_go(std::int32_t page);

  std::int32_t n_pages_;
  std::int32_t page_tokens_;
  std::vector<std::int32_t> free_;  // a stack: the lowest free page on top
  std::vector<std::int32_t> refs_;  // [n_pages]: the page tables holding each page
};

}  // namespace chatai::engine::cuda
