// SentencePiece merging as llama.cpp's SPM tokenizer does it: the text starts as one piece per
// UTF-8 character; the adjacent pair whose joined text is the highest-scoring token merges
// (the leftmost on ties) until no pair forms a token.
#include <algorithm>

#include "vocabulary_internal.hpp"

namespace chatai::engine::detail {

namespace {

// The length of the UTF-8 sequence a lead byte announces; stray continuation bytes count 1.
std::size_t announced_length(char lead) {
  static constexpr std::size_t by_high_bits[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return by_high_bits[static_cast<unsigned char>(lead) >> 4];
}

struct piece {
  std::size_t begin;
  std::size_t size;   // 0 once merged into the piece on its left
  std::int32_t prev;  // -1 at the start
  std::int32_t next;  // -1 at the end
};

struct bigram {
  float score;
  std::int32_t left;
  std::int32_t right;
  std::size_t size;  // of the joined text, to recognise pairs that changed since
};

}  // namespace

spm_tokenizer::spm_tokenizer(const token_index* index, const std::vector<float>* scores,
                             std::array<token_id, 256> byte_tokens)
    : index_(index), scores_(scores), byte_tokens_(byte_tokens) {}

token_id spm_tokenizer::lookup(std::string_view text) const noexcept {
  const auto it = index_->find(text);
  return it == index_->end() ? no_token : it->second;
}

void spm_tokenizer::encode(std::string_view text, std::vector<token_id>& out) const {
  std::vector<piece> pieces;
  for (std::size_t pos = 0; pos < text.size();) {
    const std::size_t size = std::min(announced_length(text[pos]), text.size() - pos);
    const auto index = static_cast<std::int32_t>(pieces.size());
    pieces.push_back({pos, size, index - 1, index + 1});
    pos += size;
  }
  if (pieces.empty()) return;
  pieces.back().next = -1;

  // A binary heap whose top is the highest score, then the leftmost pair.
  std::vector<bigram> queue;
  const auto later = [](const bigram& a, const bigram& b) {
    return a.score != b.score ? a.score < b.score : a.left > b.left;
  };
  const auto consider = [&](std::int32_t left, std::int32_t right) {
    if (left < 0 || right < 0) return;
    const piece& l = pieces[static_cast<std::size_t>(left)];
    const piece& r = pieces[static_cast<std::size_t>(right)];
    const std::size_t size = l.size + r.size;
    const token_id token = lookup(text.substr(l.begin, size));
    if (token == no_token) return;
    queue.push_back({(*scores_)[static_cast<std::size_t>(token)], left, right, size});
    std::push_heap(queue.begin(), queue.end(), later);
  };
  for (std::size_t i = 1; i < pieces.size(); ++i)
    consider(static_cast<std::int32_t>(i - 1), static_cast<std::int32_t>(i));

  while (!queue.empty()) {
    std::pop_heap(queue.begin(), queue.end(), later);
    const bigram top = queue.back();
    queue.pop_back();
    piece& left = pieces[static_cast<std::size_t>(top.left)];
    piece& right = pieces[static_cast<std::size_t>(top.right)];
    if (left.size == 0 || right.size == 0 || left.size + right.size != top.size) continue;
    left.size += right.size;
    right.size = 0;
    left.next = right.next;
    if (right.next >= 0) pieces[static_cast<std::size_t>(right.next)].prev = top.left;
    consider(left.prev, top.left);
    consider(top.left, left.next);
  }

  // Merged pieces are tokens by construction; a single character may not be, and is spelt
  // in bytes.
  for (std::int32_t i = 0; i >= 0; i = pieces[static_cast<std::size_t>(i)].next) {
    const piece& p = pieces[static_cast<std::size_t>(i)];
    const std::string_view piece_text = text.substr(p.begin, p.size);
    if (const token_id token = lookup(piece_text); token != no_token) {
      out.push_back(token);
      continue;
    }
    for (const char c : piece_text) {
      const token_id byte_token = byte_tokens_[static_cast<unsigned char>(c)];
      if (byte_token != no_token) out.push_back(byte_token);
    }
  }
}

}  // namespace chatai::engine::detail
