// UTF-8 decoding, the code point class lookup and GPT-2's byte-to-character map.
#include "unicode.hpp"

#include <array>
#include <map>
#include <vector>

namespace chatai::engine::unicode {

namespace {

// A two-stage lookup built once from the generated ranges: the high bits of a code point
// select a block of 256 classes; identical blocks are stored once.
// Thread safety: immutable after construction.
class class_lookup {
 public:
  class_lookup() {
    constexpr std::uint32_t block_count = (max_code_point + 1) / 256;
    std::map<std::array<std::uint8_t, 256>, std::uint16_t> index_of;
    block_of_.resize(block_count);
    std::array<std::uint8_t, 256> block{};
    std::size_t range = 0;
    for (std::uint32_t b = 0; b < block_count; ++b) {
      for (std::uint32_t i = 0; i < 256; ++i) {
        const std::uint32_t cpt = b * 256 + i;
        while (range + 1 < class_range_count && class_ranges[range + 1].first <= cpt) ++range;
        block[i] = class_ranges[range].classes;
      }
      const auto [it, inserted] = index_of.try_emplace(block, static_cast<std::uint16_t>(index_of.size()));
      if (inserted) blocks_.insert(blocks_.end(), block.begin(), block.end());
      block_of_[b] = it->second;
    }
  }

  std::uint8_t operator()(std::uint32_t cpt) const noexcept {
    return blocks_[static_cast<std::size_t>(block_of_[cpt >> 8]) * 256 + (cpt & 0xFF)];
  }

 private:
  std::vector<std::uint16_t> block_of_;  // [code point >> 8] -> block index
  std::vector<std::uint8_t> blocks_;     // [block index * 256 + (code point & 0xFF)] -> classes
};

// Bytes that GPT-2 keeps as their own character: printable Latin-1 except the soft hyphen.
constexpr bool keeps_own_char(unsigned byte) {
  return (byte >= 0x21 && byte <= 0x7E) || (byte >= 0xA1 && byte <= 0xAC) || (byte >= 0xAE && byte <= 0xFF);
}

struct byte_alphabet {
  std::array<std::uint16_t, 256> char_of{};
  std::array<std::uint8_t, 68> byte_of_shifted{};  // bytes whose character is 256 + index
};

constexpr byte_alphabet make_byte_alphabet() {
  byte_alphabet alphabet;
  unsigned shifted = 0;
  for (unsigned byte = 0; byte < 256; ++byte) {
    if (keeps_own_char(byte)) {
      alphabet.char_of[byte] = static_cast<std::uint16_t>(byte);
    } else {
      alphabet.char_of[byte] = static_cast<std::uint16_t>(256 + shifted);
      alphabet.byte_of_shifted[shifted] = static_cast<std::uint8_t>(byte);
      ++shifted;
    }
  }
  return alphabet;
}

constexpr byte_alphabet gpt2_alphabet = make_byte_alphabet();

bool is_continuation(unsigned char byte) { return (byte & 0xC0) == 0x80; }

}  // namespace

std::uint8_t classes_of(std::uint32_t cpt) noexcept {
  static const class_lookup lookup;
  return cpt <= max_code_point ? lookup(cpt) : std::uint8_t{other};
}

int sequence_length(std::string_view bytes) noexcept {
  const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(bytes[i]); };
  const unsigned char lead = byte(0);
  if (lead < 0x80) return 1;
  int length = 0;
  unsigned char low = 0x80, high = 0xBF;  // the range of the second byte
  if (lead >= 0xC2 && lead <= 0xDF) {
    length = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    length = 3;
    if (lead == 0xE0) low = 0xA0;
    if (lead == 0xED) high = 0x9F;
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    length = 4;
    if (lead == 0xF0) low = 0x90;
    if (lead == 0xF4) high = 0x8F;
  } else {
    return -1;
  }
  for (int i = 1; i < length; ++i) {
    if (static_cast<std::size_t>(i) >= bytes.size()) return 0;
    const unsigned char b = byte(static_cast<std::size_t>(i));
    if (i == 1 ? (b < low || b > high) : !is_continuation(b)) return -1;
  }
  return length;
}

std::uint32_t decode_sequence(std::string_view bytes, int length) noexcept {
  const auto byte = [&](std::size_t i) { return static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i])); };
  switch (length) {
    case 1: return byte(0);
    case 2: return ((byte(0) & 0x1F) << 6) | (byte(1) & 0x3F);
    case 3: return ((byte(0) & 0x0F) << 12) | ((byte(1) & 0x3F) << 6) | (byte(2) & 0x3F);
    default: return ((byte(0) & 0x07) << 18) | ((byte(1) & 0x3F) << 12) | ((byte(2) & 0x3F) << 6) | (byte(3) & 0x3F);
  }
}

void append_utf8(std::string& out, std::uint32_t cpt) {
  if (cpt < 0x80) {
    out += static_cast<char>(cpt);
  } else if (cpt < 0x800) {
    out += static_cast<char>(0xC0 | (cpt >> 6));
    out += static_cast<char>(0x80 | (cpt & 0x3F));
  } else if (cpt < 0x10000) {
    out += static_cast<char>(0xE0 | (cpt >> 12));
    out += static_cast<char>(0x80 | ((cpt >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cpt & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cpt >> 18));
    out += static_cast<char>(0x80 | ((cpt >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cpt >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cpt & 0x3F));
  }
}

bool is_valid_utf8(std::string_view text) noexcept {
  std::size_t pos = 0;
  while (pos < text.size()) {
    if (static_cast<unsigned char>(text[pos]) < 0x80) {
      ++pos;
      continue;
    }
    const int length = sequence_length(text.substr(pos));
    if (length <= 0) return false;
    pos += static_cast<std::size_t>(length);
  }
  return true;
}

std::string sanitize_utf8(std::string_view text) {
  std::string out;
  out.reserve(text.size() + 8);
  std::size_t pos = 0;
  while (pos < text.size()) {
    const int length = sequence_length(text.substr(pos));
    if (length > 0) {
      out.append(text.substr(pos, static_cast<std::size_t>(length)));
      pos += static_cast<std::size_t>(length);
    } else {
      append_utf8(out, replacement_character);
      ++pos;
    }
  }
  return out;
}

std::uint32_t byte_char(std::uint8_t byte) noexcept { return gpt2_alphabet.char_of[byte]; }

int char_byte(std::uint32_t cpt) noexcept {
  if (cpt < 256) return keeps_own_char(cpt) ? static_cast<int>(cpt) : -1;
  if (cpt < 256 + gpt2_alphabet.byte_of_shifted.size()) return gpt2_alphabet.byte_of_shifted[cpt - 256];
  return -1;
}

}  // namespace chatai::engine::unicode
