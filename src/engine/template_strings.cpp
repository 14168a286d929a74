// Python's str operations on UTF-8 text, and Python's two string formatting languages.
#include "template_strings.hpp"

#include <algorithm>
#include <cstdio>

#include "unicode.hpp"

namespace chatai::engine::jinja {

namespace {

bool is_line_break(char32_t c) {
  return c == '\n' || c == '\r' || c == 0x0B || c == 0x0C || c == 0x1C || c == 0x1D || c == 0x1E || c == 0x85 ||
         c == 0x2028 || c == 0x2029;
}

// snprintf into a string of the needed size.
template <class Arg>
std::string c_format(const std::string& spec, Arg arg) {
  for (std::size_t i = 0; i < spec.size();) {  // a width or precision beyond the limit
    std::size_t digits = 0;
    while (i + digits < spec.size() && spec[i + digits] >= '0' && spec[i + digits] <= '9') ++digits;
    if (digits > 8) check_size(max_value_size + 1);
    if (digits > 0) check_size(std::stoul(spec.substr(i, digits)));
    i += digits > 0 ? digits : 1;
  }
  const int n = std::snprintf(nullptr, 0, spec.c_str(), arg);
  if (n < 0) fail("invalid format specification '" + spec + "'");
  check_size(static_cast<std::size_t>(n));
  std::string out(static_cast<std::size_t>(n) + 1, '\0');
  std::snprintf(out.data(), out.size(), spec.c_str(), arg);
  out.pop_back();
  return out;
}

}  // namespace

std::string str_arg(const value& v, std::string_view what) {
  if (!v.is_string()) fail(std::string(what) + " must be a string, not " + std::string(type_name(v)));
  return v.as_string();
}

std::string strip_chars(std::string_view s, const value& chars, bool left, bool right) {
  if (chars.is_none() || chars.is_undefined()) return std::string(strip_space(s, left, right));
  const auto set = utf8::decode(str_arg(chars, "strip argument"));
  auto cps = utf8::decode(s);
  std::size_t begin = 0, end = cps.size();
  auto in_set = [&](char32_t c) { return set.find(c) != std::u32string::npos; };
  while (left && begin < end && in_set(cps[begin])) ++begin;
  while (right && end > begin && in_set(cps[end - 1])) --end;
  return utf8::encode(std::u32string_view(cps).substr(begin, end - begin));
}

// str.split / str.rsplit with Python's two modes: by a separator, or by runs of whitespace.
std::vector<value> split(std::string_view s, const value& sep, std::int64_t maxsplit, bool from_right) {
  std::vector<std::string> parts;
  if (sep.is_none() || sep.is_undefined()) {
    auto cps = utf8::decode(s);
    if (from_right) std::reverse(cps.begin(), cps.end());
    std::size_t i = 0;
    while (true) {
      while (i < cps.size() && is_python_space(cps[i])) ++i;
      if (i == cps.size()) break;
      std::size_t j = i;
      if (maxsplit >= 0 && static_cast<std::int64_t>(parts.size()) == maxsplit) {
        j = cps.size();
        while (j > i && is_python_space(cps[j - 1])) --j;
      } else {
        while (j < cps.size() && !is_python_space(cps[j])) ++j;
      }
      std::u32string part = cps.substr(i, j - i);
      if (from_right) std::reverse(part.begin(), part.end());
      parts.push_back(utf8::encode(part));
      i = j;
    }
    if (from_right) std::reverse(parts.begin(), parts.end());
  } else {
    const std::string separator = str_arg(sep, "separator");
    if (separator.empty()) fail("empty separator");
    if (!from_right) {
      std::size_t start = 0;
      while (maxsplit < 0 || static_cast<std::int64_t>(parts.size()) < maxsplit) {
        const auto at = s.find(separator, start);
        if (at == std::string_view::npos) break;
        parts.emplace_back(s.substr(start, at - start));
        start = at + separator.size();
      }
      parts.emplace_back(s.substr(start));
    } else {
      std::size_t end = s.size();
      std::vector<std::string> reversed;
      while (maxsplit < 0 || static_cast<std::int64_t>(reversed.size()) < maxsplit) {
        if (end < separator.size()) break;
        const auto at = s.rfind(separator, end - separator.size());
        if (at == std::string_view::npos) break;
        reversed.emplace_back(s.substr(at + separator.size(), end - at - separator.size()));
        end = at;
      }
      reversed.emplace_back(s.substr(0, end));
      parts.assign(reversed.rbegin(), reversed.rend());
    }
  }
  std::vector<value> out;
  out.reserve(parts.size());
  for (auto& p : parts) out.push_back(value::string(std::move(p)));
  return out;
}


// str.splitlines(keepends)
std::vector<std::string> split_lines(std::string_view s, bool keep_ends) {
  std::vector<std::string> lines;
  const auto cps = utf8::decode(s);
  std::size_t start = 0;
  for (std::size_t i = 0; i < cps.size(); ++i) {
    if (!is_line_break(cps[i])) continue;
    std::size_t end = i;
    if (cps[i] == '\r' && i + 1 < cps.size() && cps[i + 1] == '\n') ++i;
    lines.push_back(utf8::encode(std::u32string_view(cps).substr(start, (keep_ends ? i + 1 : end) - start)));
    start = i + 1;
  }
  if (start < cps.size()) lines.push_back(utf8::encode(std::u32string_view(cps).substr(start)));
  return lines;
}

std::string replace_all(std::string_view s, std::string_view from, std::string_view to, std::int64_t count) {
  std::string out;
  if (from.empty()) {
    const auto cps = utf8::decode(s);
    std::int64_t done = 0;
    for (std::size_t i = 0; i <= cps.size(); ++i) {
      if (count < 0 || done < count) {
        out += to;
        check_size(out.size());
        ++done;
      }
      if (i < cps.size()) utf8::append(out, cps[i]);
    }
    return out;
  }
  std::size_t start = 0;
  std::int64_t done = 0;
  while (count < 0 || done < count) {
    const auto at = s.find(from, start);
    if (at == std::string_view::npos) break;
    out += s.substr(start, at - start);
    out += to;
    check_size(out.size());
    start = at + from.size();
    ++done;
  }
  out += s.substr(start);
  check_size(out.size());
  return out;
}

std::string capitalize(std::string_view s) {
  auto cps = utf8::decode(s);
  for (std::size_t i = 0; i < cps.size(); ++i) cps[i] = i == 0 ? to_upper(cps[i]) : to_lower(cps[i]);
  return utf8::encode(cps);
}

// Python's str.title(): a letter after a cased letter is lowered, any other is raised.
std::string python_title(std::string_view s) {
  auto cps = utf8::decode(s);
  bool previous_cased = false;
  for (auto& c : cps) {
    c = previous_cased ? to_lower(c) : to_upper(c);
    previous_cased = is_cased_letter(c);
  }
  return utf8::encode(cps);
}

// Jinja2's title filter: words begin after whitespace, '-', '(', '{', '[' or '<'.
std::string jinja_title(std::string_view s) {
  auto cps = utf8::decode(s);
  auto is_boundary = [](char32_t c) {
    return is_python_space(c) || c == '-' || c == '(' || c == '{' || c == '[' || c == '<';
  };
  bool word_start = true;
  for (auto& c : cps) {
    if (is_boundary(c)) {
      word_start = true;
      continue;
    }
    c = word_start ? to_upper(c) : to_lower(c);
    word_start = false;
  }
  return utf8::encode(cps);
}

bool starts_or_ends(std::string_view s, const value& affix, bool at_start) {
  auto check = [&](const value& v) {
    const std::string a = str_arg(v, at_start ? "startswith argument" : "endswith argument");
    return at_start ? s.starts_with(a) : s.ends_with(a);
  };
  if (affix.is_list() && affix.as_list().is_tuple)
    return std::any_of(affix.as_list().items.begin(), affix.as_list().items.end(), check);
  return check(affix);
}

std::int64_t find_text(std::string_view s, std::string_view needle, bool from_right) {
  const auto at = from_right ? s.rfind(needle) : s.find(needle);
  if (at == std::string_view::npos) return -1;
  return static_cast<std::int64_t>(utf8::length(s.substr(0, at)));
}

std::int64_t count_text(std::string_view s, std::string_view needle) {
  if (needle.empty()) return static_cast<std::int64_t>(utf8::length(s)) + 1;
  std::int64_t n = 0;
  for (std::size_t at = s.find(needle); at != std::string_view::npos; at = s.find(needle, at + needle.size())) ++n;
  return n;
}

// A character of a word as Python's \w and str.isalnum() see it: a letter, a number or '_'.
bool is_word_char(char32_t c) {
  return c == '_' || (unicode::classes_of(c) & (unicode::letter | unicode::number)) != 0;
}

bool is_letter(char32_t c) { return (unicode::classes_of(c) & unicode::letter) != 0; }

// str.format() with automatic or explicit field numbers and keyword fields; no format specs.
std::string python_format(std::string_view fmt, const arguments& args) {
  std::string out;
  std::size_t auto_index = 0;
  for (std::size_t i = 0; i < fmt.size(); ++i) {
    const char c = fmt[i];
    if (c == '}') {
      if (i + 1 < fmt.size() && fmt[i + 1] == '}') ++i;
      else fail("single '}' encountered in format string");
      out += '}';
      continue;
    }
    if (c != '{') {
      out += c;
      continue;
    }
    if (i + 1 < fmt.size() && fmt[i + 1] == '{') {
      out += '{';
      ++i;
      continue;
    }
    const auto close = fmt.find('}', i);
    if (close == std::string_view::npos) fail("single '{' encountered in format string");
    const auto field = fmt.substr(i + 1, close - i - 1);
    if (field.find_first_of(":!.[") != std::string_view::npos)
      fail_unsupported("format fields with conversions, specs or lookups ('{" + std::string(field) +
                       "}') are not supported");
    const value* v = nullptr;
    if (field.empty() || std::all_of(field.begin(), field.end(), [](char d) { return d >= '0' && d <= '9'; })) {
      const std::size_t index = field.empty() ? auto_index++ : std::stoul(std::string(field));
      if (index >= args.positional.size()) fail("Replacement index " + std::to_string(index) + " out of range");
      v = &args.positional[index];
    } else {
      for (const auto& [name, arg] : args.named)
        if (name == field) v = &arg;
      if (!v) fail("KeyError: '" + std::string(field) + "'");
    }
    append_str(out, *v);
    i = close;
  }
  return out;
}


std::string percent_format(std::string_view fmt, const arguments& args, bool mapping) {
  std::string out;
  std::size_t next = 0;
  auto take = [&](std::string_view key) -> const value& {
    if (!key.empty()) {
      for (const auto& [name, arg] : args.named)
        if (name == key) return arg;
      fail("format key '" + std::string(key) + "' is missing");
    }
    if (next >= args.positional.size()) fail("not enough arguments for format string");
    return args.positional[next++];
  };
  for (std::size_t i = 0; i < fmt.size(); ++i) {
    if (fmt[i] != '%') {
      out += fmt[i];
      continue;
    }
    if (++i >= fmt.size()) fail("incomplete format");
    std::string_view key;
    if (fmt[i] == '(') {
      const auto close = fmt.find(')', i);
      if (close == std::string_view::npos) fail("incomplete format key");
      key = fmt.substr(i + 1, close - i - 1);
      i = close + 1;
    }
    std::string spec = "%";
    while (i < fmt.size() && std::string_view("-+ #0123456789.").find(fmt[i]) != std::string_view::npos)
      spec += fmt[i++];
    if (i >= fmt.size()) fail("incomplete format");
    const char conv = fmt[i];
    if (conv == '%') {
      out += '%';
      continue;
    }
    const value& v = take(key);
    switch (conv) {
      case 's':
      case 'r':
        out += c_format(spec + "s", (conv == 's' ? to_str(v) : repr(v)).c_str());
        break;
      case 'd':
      case 'i':
      case 'x':
      case 'X':
      case 'o': {
        if (!v.is_number())
          fail("%" + std::string(1, conv) + " format: a number is required, not " + std::string(type_name(v)));
        const long long n = v.is_float() ? static_cast<long long>(v.as_float()) : v.to_integer();
        out += c_format(spec + "ll" + (conv == 'i' ? 'd' : conv), n);
        break;
      }
      case 'f':
      case 'F':
      case 'e':
      case 'E':
      case 'g':
      case 'G':
        if (!v.is_number()) fail("must be real number, not " + std::string(type_name(v)));
        out += c_format(spec + conv, v.to_double());
        break;
      default: fail_unsupported("the format conversion '%" + std::string(1, conv) + "' is not supported");
    }
    check_size(out.size());
  }
  if (next < args.positional.size() && !mapping) fail("not all arguments converted during string formatting");
  return out;
}

}  // namespace chatai::engine::jinja
