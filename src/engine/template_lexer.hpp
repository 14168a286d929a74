// Splits a chat template into text and tag tokens, with Hugging Face's whitespace settings.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace chatai::engine::jinja {

enum class token_kind : std::uint8_t {
  text,         // template data, whitespace control already applied
  print_begin,  // {{
  print_end,    // }}
  block_begin,  // {%
  block_end,    // %}
  name,
  string,
  integer,
  floating,
  op,  // an operator or punctuation; `raw` holds it
  end,
};

struct token {
  token_kind kind = token_kind::end;
  std::size_t offset = 0;  // first byte in the source
  std::size_t end = 0;     // one past the last byte
  std::string_view raw;    // the source text of the token
  std::string text;        // text tokens and string literals: the value
  std::int64_t integer = 0;
  double floating = 0;
};

// What Jinja2 does to the source first: "\r\n" and "\r" become "\n", and one trailing newline
// is dropped (keep_trailing_newline is off).
std::string normalize_newlines(std::string_view source);

// Tokens of a normalized source, ending with an `end` token. Comments disappear and raw
// blocks become text. trim_blocks and lstrip_blocks are on, as Hugging Face sets them.
// Throws template_error (parse_error) with the offset of a malformed tag.
std::vector<token> tokenize(std::string_view source);

}  // namespace chatai::engine::jinja
