// Byte-level BPE: each word starts as one token per byte; the adjacent pair with the best
// merge rank merges (the leftmost on ties) until no pair has a merge.
#include <algorithm>
#include <bit>

#include "unicode.hpp"
#include "vocabulary_internal.hpp"

namespace chatai::engine::detail {

bpe_merge_table::bpe_merge_table(std::size_t expected) {
  const std::size_t capacity = std::bit_ceil(std::max<std::size_t>(16, expected * 2));
  slots_.resize(capacity);
  mask_ = capacity - 1;
  shift_ = 64 - std::countr_zero(capacity);
}

std::size_t bpe_merge_table::home_of(std::uint64_t key) const noexcept {
  return static_cast<std::size_t>((key * 0x9E3779B97F4A7C15ull) >> shift_) & mask_;
}

void bpe_merge_table::insert(token_id left, token_id right, bpe_merge merge) {
  const std::uint64_t key = key_of(left, right);
  for (std::size_t i = home_of(key);; i = (i + 1) & mask_) {
    if (slots_[i].key == key) return;
    if (slots_[i].key == empty_key) {
      slots_[i] = {key, merge};
      return;
    }
  }
}

bpe_merge bpe_merge_table::find(token_id left, token_id right) const noexcept {
  if (slots_.empty()) return {};
  const std::uint64_t key = key_of(left, right);
  for (std::size_t i = home_of(key);; i = (i + 1) & mask_) {
    if (slots_[i].key == key) return slots_[i].merge;
    if (slots_[i].key == empty_key) return {};
  }
}

bpe_tokenizer::bpe_tokenizer(std::array<token_id, 256> byte_tokens, bpe_merge_table merges,
                             const token_index* whole_words)
    : byte_tokens_(byte_tokens), merges_(std::move(merges)), whole_words_(whole_words) {}

void bpe_tokenizer::encode_word(std::string_view word, scratch& buffers, std::vector<token_id>& out) const {
  if (whole_words_ != nullptr) {
    buffers.characters.clear();
    for (const char c : word) unicode::append_utf8(buffers.characters, unicode::byte_char(static_cast<std::uint8_t>(c)));
    if (const auto it = whole_words_->find(buffers.characters); it != whole_words_->end()) {
      out.push_back(it->second);
      return;
    }
  }

  // A byte without a token has no text to merge with; it is left out, as llama.cpp does.
  auto& symbols = buffers.symbols;
  symbols.clear();
  for (const char c : word) {
    const token_id id = byte_tokens_[static_cast<std::uint8_t>(c)];
    if (id == no_token) continue;
    const auto index = static_cast<std::int32_t>(symbols.size());
    symbols.push_back({id, index - 1, index + 1});
  }
  if (symbols.empty()) return;
  symbols.back().next = -1;

  // The queue is a binary heap whose top is the lowest rank, then the leftmost pair.
  auto& queue = buffers.queue;
  queue.clear();
  const auto later = [](const scratch::bigram& a, const scratch::bigram& b) {
    return a.rank != b.rank ? a.rank > b.rank : a.left > b.left;
  };
  const auto consider = [&](std::int32_t left, std::int32_t right) {
    if (left < 0 || right < 0) return;
    const token_id left_id = symbols[static_cast<std::size_t>(left)].id;
    const token_id right_id = symbols[static_cast<std::size_t>(right)].id;
    const bpe_merge merge = merges_.find(left_id, right_id);
    if (merge.rank < 0) return;
    queue.push_back({merge.rank, left, right, left_id, right_id, merge.merged});
    std::push_heap(queue.begin(), queue.end(), later);
  };
  for (std::size_t i = 1; i < symbols.size(); ++i)
    consider(static_cast<std::int32_t>(i - 1), static_cast<std::int32_t>(i));

  while (!queue.empty()) {
    std::pop_heap(queue.begin(), queue.end(), later);
    const scratch::bigram top = queue.back();
    queue.pop_back();
    auto& left = symbols[static_cast<std::size_t>(top.left)];
    auto& right = symbols[static_cast<std::size_t>(top.right)];
    // A pair is stale once either side merged with something else.
    if (left.id != top.left_id || right.id != top.right_id || left.next != top.right) continue;
    left.id = top.merged;
    left.next = right.next;
    if (right.next >= 0) symbols[static_cast<std::size_t>(right.next)].prev = top.left;
    right.id = no_token;
    consider(left.prev, top.left);
    consider(top.left, left.next);
  }

  for (std::int32_t i = 0; i >= 0; i = symbols[static_cast<std::size_t>(i)].next)
    out.push_back(symbols[static_cast<std::size_t>(i)].id);
}

}  // namespace chatai::engine::detail
