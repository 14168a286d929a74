// Python's str operations on UTF-8 text (strip, split, replace, case, search), and Python's
// two string formatting languages, as the template builtins need them.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "template_builtins.hpp"

namespace chatai::engine::jinja {

// The string in `v`, or a failure naming `what`.
std::string str_arg(const value& v, std::string_view what);

// s.strip(chars) / lstrip / rstrip: whitespace when `chars` is None or undefined.
std::string strip_chars(std::string_view s, const value& chars, bool left, bool right);
// s.split(sep, maxsplit) / s.rsplit: by runs of whitespace when `sep` is None or undefined.
std::vector<value> split(std::string_view s, const value& sep, std::int64_t maxsplit, bool from_right);
// s.splitlines(keepends)
std::vector<std::string> split_lines(std::string_view s, bool keep_ends);
// s.replace(from, to, count); a negative count replaces all.
std::string replace_all(std::string_view s, std::string_view from, std::string_view to, std::int64_t count);

// s.capitalize()
std::string capitalize(std::string_view s);
// Python's str.title(): a letter after a cased letter is lowered, any other is raised.
std::string python_title(std::string_view s);
// Jinja2's title filter: words begin after whitespace, '-', '(', '{', '[' or '<'.
std::string jinja_title(std::string_view s);

// s.startswith(affix) / s.endswith(affix); `affix` may be a tuple of strings.
bool starts_or_ends(std::string_view s, const value& affix, bool at_start);
// s.find(needle) / s.rfind(needle) in code points; -1 when absent.
std::int64_t find_text(std::string_view s, std::string_view needle, bool from_right);
// s.count(needle)
std::int64_t count_text(std::string_view s, std::string_view needle);

// A character of a word as Python's \w and str.isalnum() see it: a letter, a number or '_'.
bool is_word_char(char32_t c);
bool is_letter(char32_t c);
// Whether `s` is non-empty and every code point satisfies `pred` (str.isdigit() and friends).
template <class Pred>
bool all_chars(std::string_view s, Pred pred) {
  if (s.empty()) return false;
  const auto cps = utf8::decode(s);
  return std::all_of(cps.begin(), cps.end(), pred);
}

// str.format() with automatic or explicit field numbers and keyword fields; no format specs.
std::string python_format(std::string_view fmt, const arguments& args);
// printf-style formatting: `fmt % args` and the format filter. With `mapping`, the one
// positional argument is a dict whose keys %(name)s fields read, and it need not be consumed.
std::string percent_format(std::string_view fmt, const arguments& args, bool mapping);

}  // namespace chatai::engine::jinja
