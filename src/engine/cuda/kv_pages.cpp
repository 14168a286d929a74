// The KV cache's page allocator.
#include "kv_pages.hpp"

#include <algorithm>

namespace chatai::engine::cuda {

kv_page_pool::kv_page_pool(std::int32_t n_pages, std::int32_t page_tokens)
    : n_pages_(std::max(n_pages, 0)), page_tokens_(std::max(page_tokens, 1)), refs_(static_cast<std::size_t>(n_pages_), 0) {
  free_.reserve(static_cast<std::size_t>(n_pages_));
  for (std::int32_t p = n_pages_; p-- > 0;) free_.push_back(p);
}

std::int64_t kv_page_pool::pages_for(std::int64_t tokens) const noexcept {
  return tokens <= 0 ? 0 : (tokens + page_tokens_ - 1) / page_tokens_;
}

bool kv_page_pool::reserve(std::vector<std::int32_t>& pages, std::int64_t tokens) {
  const std::int64_t needed = pages_for(tokens) - static_cast<std::int64_t>(pages.size());
  if (needed <= 0) return true;
  if (needed > static_cast<std::int64_t>(free_.size())) return false;
  for (std::int64_t i = 0; i < needed; ++i) {
    pages.push_back(free_.back());
    refs_[static_cast<std::size_t>(free_.back())] = 1;
    free_.pop_back();
  }
  return true;
}

void kv_page_pool::let_go(std::int32_t page) {
  if (--refs_[static_cast<std::size_t>(page)] == 0) free_.push_back(page);
}

void kv_page_pool::shrink(std::vector<std::int32_t>& pages, std::int64_t tokens) {
  const auto keep = static_cast<std::size_t>(pages_for(tokens));
  if (pages.size() <= keep) return;
  for (std::size_t i = keep; i < pages.size(); ++i) let_go(pages[i]);
  pages.resize(keep);
  // Keep the lowest pages on top so a busy pool stays compact.
  std::sort(free_.begin(), free_.end(), std::greater<>());
}

void kv_page_pool::share(const std::vector<std::int32_t>& from, std::size_t n, std::vector<std::int32_t>& to) {
  for (std::size_t i = 0; i < n && i < from.size(); ++i) {
    ++refs_[static_cast<std::size_t>(from[i])];
    to.push_back(from[i]);
  }
}

std::int32_t kv_page_pool::replace(std::vector<std::int32_t>& pages, std::size_t i) {
  if (free_.empty()) return -1;
  const std::int32_t old = pages[i];
  pages[i] = free_.back();
  refs_[static_cast<std::size_t>(free_.back())] = 1;
  free_.pop_back();
  let_go(old);
  return old;
}

}  // namespace chatai::engine::cuda
