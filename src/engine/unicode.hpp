// Unicode support for the tokenizers: UTF-8 decoding, code point classes (general category and
// White_Space, of the Unicode version named atop unicode_tables.cpp: 14.0.0, from Python 3.11's
// unicodedata) and GPT-2's byte-to-character map.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace chatai::engine::unicode {

// The classes of a code point: exactly one general-category bit, plus `whitespace` for the
// White_Space property. Every code point up to U+10FFFF has a non-zero value.
enum cpt_class : std::uint8_t {
  letter = 1 << 0,       // L*
  number = 1 << 1,       // N*
  punctuation = 1 << 2,  // P*
  symbol = 1 << 3,       // S*
  mark = 1 << 4,         // M*
  separator = 1 << 5,    // Z*
  other = 1 << 6,        // C*, unassigned code points included
  whitespace = 1 << 7,   // White_Space
};

// One entry of the generated table: `classes` holds from `first` up to the next entry's first.
struct class_range {
  std::uint32_t first;
  std::uint8_t classes;
};

// The generated table (unicode_tables.cpp, written by cmake/gen_unicode_tables.py), sorted by
// `first`, beginning at 0.
extern const class_range class_ranges[];
extern const std::size_t class_range_count;

inline constexpr std::uint32_t max_code_point = 0x10FFFF;
inline constexpr std::uint32_t replacement_character = 0xFFFD;

// The classes of `cpt` (cpt <= max_code_point).
std::uint8_t classes_of(std::uint32_t cpt) noexcept;

// The length of the well-formed UTF-8 sequence at the start of `bytes`: 1 to 4; 0 when
// `bytes` ends inside a sequence that may still become well-formed; -1 when the first byte
// cannot begin a well-formed sequence (overlong forms, surrogates and values past U+10FFFF
// are ill-formed).
int sequence_length(std::string_view bytes) noexcept;

// Decodes the well-formed sequence of `length` bytes at the start of `bytes`.
std::uint32_t decode_sequence(std::string_view bytes, int length) noexcept;

// Appends the UTF-8 form of `cpt`.
void append_utf8(std::string& out, std::uint32_t cpt);

// `text` with each byte that does not belong to a well-formed sequence replaced by U+FFFD.
std::string sanitize_utf8(std::string_view text);
bool is_valid_utf8(std::string_view text) noexcept;

// GPT-2's byte-level alphabet: every byte has a printable character that stands for it in the
// vocabulary's token texts. byte_char(b) is that character; char_byte(c) the byte, or -1 when
// `c` stands for no byte.
std::uint32_t byte_char(std::uint8_t byte) noexcept;
int char_byte(std::uint32_t cpt) noexcept;

}  // namespace chatai::engine::unicode
