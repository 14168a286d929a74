// The prefix cache: kept sequences indexed by hash chains over their pages.
#include "chatai/engine/prefix_cache.hpp"

#include <algorithm>

namespace chatai::engine {

namespace {

constexpr std::uint64_t chain_seed = 0x6a09e667f3bcc908ull;

// One token into a chain hash (splitmix64's finalizer over the running value).
std::uint64_t mix(std::uint64_t h, token_id t) noexcept {
  h ^= static_cast<std::uint64_t>(static_cast<std::uint32_t>(t)) + 0x9e3779b97f4a7c15ull;
  h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ull;
  h = (h ^ (h >> 27)) * 0x94d049bb133111ebull;
  return h ^ (h >> 31);
}

}  // namespace

prefix_cache::prefix_cache(backend& compute, std::int64_t max_tokens)
    : compute_(compute), max_tokens_(std::max<std::int64_t>(0, max_tokens)), page_(compute.page_tokens()) {}

prefix_cache::~prefix_cache() {
  for (auto& [id, e] : entries_) (void)compute_.free_sequence(e.sequence);
}

std::vector<std::uint64_t> prefix_cache::chain_of(std::span<const token_id> tokens, std::size_t pages) const {
  std::vector<std::uint64_t> chain;
  chain.reserve(pages);
  std::uint64_t h = chain_seed;
  for (std::size_t p = 0; p < pages; ++p) {
    for (std::int64_t i = 0; i < page_; ++i) h = mix(h, tokens[p * static_cast<std::size_t>(page_) + static_cast<std::size_t>(i)]);
    chain.push_back(h);
  }
  return chain;
}

std::int64_t prefix_cache::reuse(std::span<const token_id> prompt, sequence_id target) {
  if (!enabled()) return 0;
  ++stats_.lookups;
  stats_.prompt_tokens += static_cast<std::int64_t>(prompt.size());
  if (prompt.size() < 2 || entries_.empty()) return 0;
  // The whole pages first, by their chain hashes.
  const std::size_t most = (prompt.size() - 1) / static_cast<std::size_t>(page_);
  std::uint64_t h = chain_seed;
  std::size_t pages = 0;
  const std::vector<std::uint64_t>* holders = nullptr;
  for (std::size_t p = 0; p < most; ++p) {
    for (std::int64_t i = 0; i < page_; ++i) h = mix(h, prompt[p * static_cast<std::size_t>(page_) + static_cast<std::size_t>(i)]);
    const auto found = by_chain_.find(h);
    if (found == by_chain_.end()) break;
    pages = p + 1;
    holders = &found->second;
  }
  if (pages == 0) return 0;
  // Then, of the sequences holding those pages, the one whose next tokens go furthest along
  // the prompt: a page shared part-way is copied when the new sequence writes into it.
  const auto n = static_cast<std::ptrdiff_t>(pages) * page_;
  const auto limit = static_cast<std::ptrdiff_t>(prompt.size()) - 1;  // the last token is computed
  std::ptrdiff_t best = 0;
  std::uint64_t best_id = 0;
  for (auto it = holders->rbegin(); it != holders->rend(); ++it) {  // most recently indexed first
    const entry& e = entries_.at(*it);
    if (!std::equal(prompt.begin(), prompt.begin() + n, e.tokens.begin())) continue;  // a hash collision
    const std::ptrdiff_t end = std::min(limit, static_cast<std::ptrdiff_t>(e.tokens.size()));
    std::ptrdiff_t m = n;
    while (m < end && prompt[static_cast<std::size_t>(m)] == e.tokens[static_cast<std::size_t>(m)]) ++m;
    if (m > best) {
      best = m;
      best_id = *it;
    }
  }
  if (best == 0) return 0;
  entry& e = entries_.at(best_id);
  if (!compute_.share_prefix(e.sequence, target, best)) return 0;
  e.used = ++clock_;
  ++stats_.hits;
  stats_.reused_tokens += best;
  return best;
}

void prefix_cache::keep(sequence_id sequence, std::vector<token_id> tokens) {
  // More than the budget: its whole pages that fit.
  if (enabled() && static_cast<std::int64_t>(tokens.size()) > max_tokens_) {
    tokens.resize(static_cast<std::size_t>(max_tokens_ / page_ * page_));
  }
  const std::size_t pages = enabled() ? tokens.size() / static_cast<std::size_t>(page_) : 0;
  const auto n = static_cast<std::int64_t>(tokens.size());
  auto length = compute_.sequence_length(sequence);
  if (pages == 0 || !length || *length < n || (*length > n && !compute_.truncate_sequence(sequence, n))) {
    (void)compute_.free_sequence(sequence);
    return;
  }
  auto chain = chain_of(tokens, pages);
  // Whether `whole` begins with all of `part`.
  const auto starts_with = [](const std::vector<token_id>& whole, const std::vector<token_id>& part) {
    return whole.size() >= part.size() && std::equal(part.begin(), part.end(), whole.begin());
  };
  // Already held by a kept sequence: nothing to add.
  if (const auto found = by_chain_.find(chain.back()); found != by_chain_.end()) {
    for (const auto id : found->second) {
      entry& e = entries_.at(id);
      if (!starts_with(e.tokens, tokens)) continue;
      e.used = ++clock_;
      (void)compute_.free_sequence(sequence);
      return;
    }
  }
  // Kept sequences whose whole pages this one holds too, and no more tokens than it, are of
  // no more use (what they hold past those pages is at most part of a page).
  for (std::size_t p = 0; p < pages; ++p) {
    const auto found = by_chain_.find(chain[p]);
    if (found == by_chain_.end()) continue;
    const auto holders = found->second;
    for (const auto id : holders) {
      const entry& e = entries_.at(id);
      const auto whole = static_cast<std::ptrdiff_t>(p + 1) * page_;
      if (e.chain.size() == p + 1 && e.tokens.size() <= tokens.size() &&
          std::equal(e.tokens.begin(), e.tokens.begin() + whole, tokens.begin())) {
        erase(id);
      }
    }
  }
  const std::uint64_t id = next_id_++;
  for (const auto h : chain) by_chain_[h].push_back(id);
  entries_.emplace(id, entry{sequence, std::move(tokens), std::move(chain), ++clock_});
  ++stats_.kept;
  stats_.held_tokens += n;
  shrink_to(max_tokens_);
}

void prefix_cache::shrink_to(std::int64_t tokens) {
  while (stats_.held_tokens > tokens && !entries_.empty()) {
    const auto oldest = std::min_element(entries_.begin(), entries_.end(),
                                         [](const auto& a, const auto& b) { return a.second.used < b.second.used; });
    erase(oldest->first);
    ++stats_.evicted;
  }
}

void prefix_cache::erase(std::uint64_t id) {
  const auto it = entries_.find(id);
  if (it == entries_.end()) return;
  for (const auto h : it->second.chain) {
    auto found = by_chain_.find(h);
    if (found == by_chain_.end()) continue;
    auto& holders = found->second;
    holders.erase(std::remove(holders.begin(), holders.end(), id), holders.end());
    if (holders.empty()) by_chain_.erase(found);
  }
  (void)compute_.free_sequence(it->second.sequence);
  --stats_.kept;
  stats_.held_tokens -= static_cast<std::int64_t>(it->second.tokens.size());
  entries_.erase(it);
}

}  // namespace chatai::engine
