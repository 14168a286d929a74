// The pre-tokenizers of byte-level BPE: hand-written scanners over code points that split text
// into words exactly as the regular expressions llama.cpp uses for each family.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <utility>
#include <vector>

#include "chatai/engine/vocabulary.hpp"

namespace chatai::engine::unicode {

// A word: bytes [first, second) of the text.
using byte_range = std::pair<std::size_t, std::size_t>;

// Buffers one splitting call reuses.
struct split_scratch {
  std::vector<std::uint32_t> cpts;      // the text's code points
  std::vector<std::uint8_t> classes;    // their cpt_class bits
  std::vector<std::size_t> offsets;     // byte offset of each code point, and the text's size
  std::vector<std::pair<std::uint32_t, std::uint32_t>> chunks, next_chunks;  // code point ranges
};

// Replaces `words` with the words of `text`, which must be well-formed UTF-8. Every byte
// belongs to exactly one word, in order.
void split_words(std::string_view text, pre_tokenizer kind, split_scratch& scratch, std::vector<byte_range>& words);

}  // namespace chatai::engine::unicode
