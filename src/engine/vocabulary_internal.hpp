// The merging algorithms behind chatai::engine::vocabulary: byte-level BPE and SentencePiece.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "chatai/engine/vocabulary.hpp"

namespace chatai::engine::detail {

// Token texts to ids; the views point into the vocabulary's own strings.
using token_index = std::unordered_map<std::string_view, token_id>;

// What merging two adjacent tokens gives: the merge's rank (lower merges first) and the token.
struct bpe_merge {
  std::int32_t rank = -1;
  token_id merged = no_token;
};

// An open-addressing hash table from a pair of token ids to their merge, sized for a load
// factor of at most one half.
// Thread safety: immutable after construction.
class bpe_merge_table {
 public:
  bpe_merge_table() = default;
  explicit bpe_merge_table(std::size_t expected);

  // Keeps the first (best) merge of a pair.
  void insert(token_id left, token_id right, bpe_merge merge);
  // The merge of (left, right); rank -1 when the pair does not merge.
  bpe_merge find(token_id left, token_id right) const noexcept;

 private:
  struct slot {
    std::uint64_t key = empty_key;
    bpe_merge merge;
  };
  static constexpr std::uint64_t empty_key = ~std::uint64_t{0};
  static std::uint64_t key_of(token_id left, token_id right) noexcept {
    return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(left)) << 32) | static_cast<std::uint32_t>(right);
  }
  std::size_t home_of(std::uint64_t key) const noexcept;

  std::vector<slot> slots_;
  std::size_t mask_ = 0;
  int shift_ = 64;
};

// Byte-level BPE over the words the pre-tokenizer produced.
// Thread safety: immutable after construction; encode_word() is safe from any thread with
// its own scratch.
class bpe_tokenizer {
 public:
  // Buffers one encoding call reuses from word to word.
  struct scratch {
    struct symbol {
      token_id id;       // no_token once merged into the symbol on its left
      std::int32_t prev;  // -1 at the start of the word
      std::int32_t next;  // -1 at the end
    };
    struct bigram {
      std::int32_t rank;
      std::int32_t left;
      std::int32_t right;
      token_id left_id;
      token_id right_id;
      token_id merged;
    };
    std::vector<symbol> symbols;
    std::vector<bigram> queue;
    std::string characters;  // the word in GPT-2's byte characters
  };

  bpe_tokenizer() = default;
  // `byte_tokens[b]`: the token whose text is byte b's character (no_token when missing).
  // `whole_words`: when set, a word that is itself a token is not merged (Llama 3's
  // ignore_merges); it is the vocabulary's index, which must outlive this object.
  bpe_tokenizer(std::array<token_id, 256> byte_tokens, bpe_merge_table merges, const token_index* whole_words);

  // Appends the tokens of one word (its UTF-8 bytes).
  void encode_word(std::string_view word, scratch& buffers, std::vector<token_id>& out) const;

 private:
  std::array<token_id, 256> byte_tokens_{};
  bpe_merge_table merges_;
  const token_index* whole_words_ = nullptr;
};

// SentencePiece (llama.cpp's SPM tokenizer): adjacent pieces whose joined text is a token
// merge, highest score first; what remains without a token is spelt in byte tokens.
// Thread safety: immutable after construction; encode() is safe from any thread.
class spm_tokenizer {
 public:
  spm_tokenizer() = default;
  // `index` and `scores` belong to the vocabulary and must outlive this object.
  // `byte_tokens[b]`: the <0xXX> token of byte b, or the token of the byte itself, or
  // `unknown` when neither exists.
  spm_tokenizer(const token_index* index, const std::vector<float>* scores, std::array<token_id, 256> byte_tokens);

  // Appends the tokens of `text`, whose spaces are already U+2581.
  void encode(std::string_view text, std::vector<token_id>& out) const;

 private:
  token_id lookup(std::string_view text) const noexcept;

  const token_index* index_ = nullptr;
  const std::vector<float>* scores_ = nullptr;
  std::array<token_id, 256> byte_tokens_{};
};

}  // namespace chatai::engine::detail
