// Automatic prefix caching: the KV caches of finished sequences are kept, and a new sequence
// whose prompt begins with the same tokens starts from their pages instead of computing them
// again. Chat clients send the whole conversation each turn, so a turn reuses all of the
// history that an earlier turn (or an earlier request with the same system prompt) computed.
//
// The index unit is the backend's KV page (backend::page_tokens positions). A kept sequence
// is indexed by a hash chain over its full pages: the hash of page i covers the tokens of pages
// 0..i, so one lookup per page finds the longest cached run of whole pages; the sequences
// holding it are then compared token by token past it (into their partial last page, or to
// where they part from the prompt), so a prefix is reused to the token, and the tokens are
// always compared before a prefix is used (a hash collision costs a miss, never a wrong
// answer). Pages are
// shared by reference between the kept sequences and the sequences that took a prefix from
// them (backend::share_prefix); a page is copied only when a sequence writes into a shared one.
// Kept sequences are freed least recently used first when the tokens they hold exceed the
// budget, or all at once under memory pressure (shrink_to).
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <unordered_map>
#include <vector>

#include "chatai/engine/backend.hpp"

namespace chatai::engine {

struct prefix_cache_stats {
  std::int64_t lookups = 0;        // sequences that looked for a prefix
  std::int64_t hits = 0;           // ... and found one
  std::int64_t prompt_tokens = 0;  // prompt tokens of the sequences that looked
  std::int64_t reused_tokens = 0;  // prompt tokens taken from the cache instead of computed
  std::int64_t kept = 0;           // sequences held now
  std::int64_t held_tokens = 0;    // tokens they hold (pages shared among them counted each time)
  std::int64_t evicted = 0;        // sequences freed to stay within the budget or under pressure
};

// Thread safety: not thread-safe; the generator that owns it drives it.
class prefix_cache {
 public:
  // Keeps at most max_tokens tokens in finished sequences of `compute`; 0 keeps none (and
  // reuse finds nothing). A backend whose page_tokens is 0 caches nothing either.
  prefix_cache(backend& compute, std::int64_t max_tokens);
  ~prefix_cache();
  prefix_cache(const prefix_cache&) = delete;
  prefix_cache& operator=(const prefix_cache&) = delete;

  // Starts the empty sequence `target` with the longest cached prefix of `prompt` that takes
  // at least one whole page, and at most prompt.size() - 1 tokens, so that the last prompt
  // token is computed and gives the logits of the first output. Returns the number of tokens
  // taken (0: none).
  std::int64_t reuse(std::span<const token_id> prompt, sequence_id target);

  // Takes over `sequence`, whose cache holds `tokens` (all of them, in order; positions past
  // them are dropped): it is kept for later prefixes, or freed at once when it holds no full
  // page, adds nothing to what is kept, or cannot be kept.
  void keep(sequence_id sequence, std::vector<token_id> tokens);

  // Frees kept sequences, least recently used first, until at most `tokens` are held.
  void shrink_to(std::int64_t tokens);

  prefix_cache_stats stats() const noexcept { return stats_; }
  bool enabled() const noexcept { return max_tokens_ > 0 && page_ > 0; }

 private:
  struct entry {
    sequence_id sequence = 0;
    std::vector<token_id> tokens;       // what its cache holds: whole pages, then maybe part of one
    std::vector<std::uint64_t> chain;   // chain[i]: the hash of pages 0..i, for its whole pages
    std::uint64_t used = 0;             // when it was last kept or reused (a counter)
  };

  std::vector<std::uint64_t> chain_of(std::span<const token_id> tokens, std::size_t pages) const;
  void erase(std::uint64_t id);

  backend& compute_;
  std::int64_t max_tokens_;
  std::int64_t page_;
  std::uint64_t next_id_ = 1;
  std::uint64_t clock_ = 0;
  std::map<std::uint64_t, entry> entries_;
  // The entries holding the pages a chain hash ends with, most recently indexed last.
  std::unordered_map<std::uint64_t, std::vector<std::uint64_t>> by_chain_;
  prefix_cache_stats stats_;
};

}  // namespace chatai::engine
