// The template lexer: text, tags, comments and raw blocks, then the tokens inside tags.
#include "template_lexer.hpp"

#include <charconv>
#include <cstdlib>

#include "template_value.hpp"

namespace chatai::engine::jinja {

namespace {

[[noreturn]] void syntax_error(std::string message, std::size_t offset) {
  throw template_error(errc::parse_error, std::move(message), offset);
}

bool is_name_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_ascii_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

// Bytes of Python whitespace starting at `pos`.
std::size_t skip_space(std::string_view s, std::size_t pos) {
  std::size_t size = 0;
  while (pos < s.size() && is_python_space(utf8::decode_at(s, pos, size))) pos += size;
  return pos;
}

// Where the first tag opener ({{, {%, {#) at or after `pos` starts, or npos.
std::size_t find_tag(std::string_view s, std::size_t pos) {
  while ((pos = s.find('{', pos)) != std::string_view::npos) {
    if (pos + 1 < s.size() && (s[pos + 1] == '{' || s[pos + 1] == '%' || s[pos + 1] == '#')) return pos;
    ++pos;
  }
  return pos;
}

// A "{% NAME %}" tag at `pos` for raw/endraw: returns the offset after it, 0 when there is none.
// `sign` receives the opener's - or + (or 0), `end_sign` the closer's.
std::size_t match_word_tag(std::string_view s, std::size_t pos, std::string_view word, char& sign, char& end_sign) {
  if (s.substr(pos, 2) != "{%") return 0;
  std::size_t p = pos + 2;
  sign = 0;
  if (p < s.size() && (s[p] == '-' || s[p] == '+')) sign = s[p++];
  while (p < s.size() && is_ascii_space(s[p])) ++p;
  if (s.substr(p, word.size()) != word) return 0;
  p += word.size();
  if (p < s.size() && (is_name_start(s[p]) || is_digit(s[p]))) return 0;
  while (p < s.size() && is_ascii_space(s[p])) ++p;
  end_sign = 0;
  if (p < s.size() && (s[p] == '-' || s[p] == '+')) end_sign = s[p++];
  if (s.substr(p, 2) != "%}") return 0;
  return p + 2;
}

void append_code_point(std::string& out, std::uint32_t cp, std::size_t offset) {
  if (cp > 0x10FFFF) syntax_error("invalid escape in string literal", offset);
  utf8::append(out, static_cast<char32_t>(cp));
}

// Decodes the backslash escapes of a string literal the way Python's unicode-escape does.
std::string unescape(std::string_view body, std::size_t offset) {
  std::string out;
  out.reserve(body.size());
  for (std::size_t i = 0; i < body.size(); ++i) {
    if (body[i] != '\\' || i + 1 == body.size()) {
      out += body[i];
      continue;
    }
    const char e = body[++i];
    switch (e) {
      case '\n': break;
      case '\\': out += '\\'; break;
      case '\'': out += '\''; break;
      case '"': out += '"'; break;
      case 'a': out += '\a'; break;
      case 'b': out += '\b'; break;
      case 'f': out += '\f'; break;
      case 'n': out += '\n'; break;
      case 'r': out += '\r'; break;
      case 't': out += '\t'; break;
      case 'v': out += '\v'; break;
      case 'x':
      case 'u':
      case 'U': {
        const std::size_t digits = e == 'x' ? 2 : (e == 'u' ? 4 : 8);
        std::uint32_t cp = 0;
        const auto* first = body.data() + i + 1;
        if (i + digits >= body.size())
          syntax_error("truncated \\" + std::string(1, e) + " escape in string literal", offset);
        auto res = std::from_chars(first, first + digits, cp, 16);
        if (res.ec != std::errc() || res.ptr != first + digits)
          syntax_error("truncated \\" + std::string(1, e) + " escape in string literal", offset);
        append_code_point(out, cp, offset);
        i += digits;
        break;
      }
      case 'N':
        syntax_error("named unicode escapes (\\N{...}) are not supported", offset);
      default:
        if (e >= '0' && e <= '7') {
          std::uint32_t cp = static_cast<std::uint32_t>(e - '0');
          for (int k = 0; k < 2 && i + 1 < body.size() && body[i + 1] >= '0' && body[i + 1] <= '7'; ++k)
            cp = cp * 8 + static_cast<std::uint32_t>(body[++i] - '0');
          append_code_point(out, cp, offset);
        } else {
          out += '\\';
          out += e;
        }
    }
  }
  return out;
}

class lexer {
 public:
  explicit lexer(std::string_view source) : s_(source) {}

  std::vector<token> run() {
    std::size_t pos = 0;
    bool line_starting = true;
    while (pos < s_.size()) {
      const std::size_t tag = find_tag(s_, pos);
      if (tag == std::string_view::npos) {
        emit_text(pos, s_.substr(pos));
        break;
      }
      const char type = s_[tag + 1];
      char sign = 0;
      if (tag + 2 < s_.size() && (s_[tag + 2] == '-' || s_[tag + 2] == '+')) sign = s_[tag + 2];
      char raw_sign = 0, raw_end_sign = 0;
      const std::size_t raw_end = type == '%' ? match_word_tag(s_, tag, "raw", raw_sign, raw_end_sign) : 0;
      emit_text(pos, strip_before(s_.substr(pos, tag - pos), sign, type != '{', line_starting));
      if (raw_end) {
        pos = raw_end;
        if (raw_end_sign == '-') pos = skip_space(s_, pos);
        line_starting = pos > 0 && s_[pos - 1] == '\n';
        pos = lex_raw(tag, pos, line_starting);
      } else if (type == '#') {
        pos = lex_comment(tag, tag + 2 + (sign ? 1 : 0));
      } else {
        pos = lex_tag(tag, type == '{', sign);
      }
      line_starting = pos > 0 && s_[pos - 1] == '\n';
    }
    token end;
    end.kind = token_kind::end;
    end.offset = end.end = s_.size();
    tokens_.push_back(std::move(end));
    return std::move(tokens_);
  }

 private:
  // The text before a tag after the tag's whitespace control: "-" strips all whitespace,
  // lstrip_blocks strips a block or comment tag's indentation unless the tag says "+".
  std::string_view strip_before(std::string_view text, char sign, bool lstrip, bool line_starting) const {
    if (sign == '-') return strip_space(text, false, true);
    if (sign == '+' || !lstrip) return text;
    const auto newline = text.rfind('\n');
    const std::size_t line_start = newline == std::string_view::npos ? 0 : newline + 1;
    if (line_start == 0 && !line_starting) return text;
    const auto tail = text.substr(line_start);
    if (!tail.empty() && strip_space(tail, true, false).empty()) return text.substr(0, line_start);
    return text;
  }

  void emit_text(std::size_t offset, std::string_view text) {
    if (text.empty()) return;
    token t;
    t.kind = token_kind::text;
    t.offset = offset;
    t.end = offset + text.size();
    t.raw = text;
    t.text = std::string(text);
    tokens_.push_back(std::move(t));
  }

  // After a block-like closer: "-" strips whitespace, "+" keeps it, otherwise trim_blocks
  // drops one newline.
  std::size_t after_block_end(std::size_t pos, char sign) const {
    if (sign == '-') return skip_space(s_, pos);
    if (sign != '+' && pos < s_.size() && s_[pos] == '\n') return pos + 1;
    return pos;
  }

  std::size_t lex_comment(std::size_t tag, std::size_t pos) {
    const auto close = s_.find("#}", pos);
    if (close == std::string_view::npos) syntax_error("missing end of comment tag", tag);
    const char sign = close > pos && (s_[close - 1] == '-' || s_[close - 1] == '+') ? s_[close - 1] : 0;
    return after_block_end(close + 2, sign);
  }

  std::size_t lex_raw(std::size_t tag, std::size_t pos, bool line_starting) {
    for (std::size_t at = s_.find("{%", pos); at != std::string_view::npos; at = s_.find("{%", at + 1)) {
      char sign = 0, end_sign = 0;
      const std::size_t after = match_word_tag(s_, at, "endraw", sign, end_sign);
      if (!after) continue;
      emit_text(pos, strip_before(s_.substr(pos, at - pos), sign, true, line_starting));
      return after_block_end(after, end_sign);
    }
    syntax_error("missing end of raw directive ({% endraw %})", tag);
  }

  std::size_t lex_tag(std::size_t tag, bool is_print, char sign) {
    token begin;
    begin.kind = is_print ? token_kind::print_begin : token_kind::block_begin;
    begin.offset = tag;
    begin.end = tag + 2 + (sign ? 1 : 0);
    begin.raw = s_.substr(tag, begin.end - tag);
    tokens_.push_back(std::move(begin));
    std::size_t pos = tag + 2 + (sign ? 1 : 0);
    const char closer = is_print ? '}' : '%';
    int depth = 0;
    while (true) {
      while (pos < s_.size() && is_ascii_space(s_[pos])) ++pos;
      if (pos >= s_.size())
        syntax_error(std::string("unexpected end of template: missing '") + (is_print ? "}}" : "%}") + "'", tag);
      if (depth == 0) {
        char end_sign = 0;
        std::size_t p = pos;
        if (s_[p] == '-' || (s_[p] == '+' && !is_print)) end_sign = s_[p++];
        if (s_.substr(p, 2) == std::string_view(closer == '}' ? "}}" : "%}")) {
          token end;
          end.kind = is_print ? token_kind::print_end : token_kind::block_end;
          end.offset = pos;
          end.end = p + 2;
          end.raw = s_.substr(pos, end.end - pos);
          tokens_.push_back(std::move(end));
          if (is_print) return end_sign == '-' ? skip_space(s_, p + 2) : p + 2;
          return after_block_end(p + 2, end_sign);
        }
      }
      pos = lex_inner(pos, depth);
    }
  }

  // One token inside a tag; returns the position after it.
  std::size_t lex_inner(std::size_t pos, int& depth) {
    token t;
    t.offset = pos;
    const char c = s_[pos];
    std::size_t end = pos;
    if (is_name_start(c)) {
      while (end < s_.size() && (is_name_start(s_[end]) || is_digit(s_[end]))) ++end;
      t.kind = token_kind::name;
    } else if (is_digit(c)) {
      end = lex_number(pos, t);
    } else if (c == '\'' || c == '"') {
      end = pos + 1;
      while (end < s_.size() && s_[end] != c) end += s_[end] == '\\' ? 2 : 1;
      if (end >= s_.size()) syntax_error("unterminated string literal", pos);
      t.kind = token_kind::string;
      t.text = unescape(s_.substr(pos + 1, end - pos - 1), pos);
      ++end;
    } else {
      static constexpr std::string_view two_char_ops[] = {"//", "**", "==", "!=", "<=", ">="};
      t.kind = token_kind::op;
      end = pos + 1;
      for (auto op : two_char_ops)
        if (s_.substr(pos, 2) == op) end = pos + 2;
      if (end == pos + 1 && std::string_view("+-*/%~[](){}<>=.:|,;").find(c) == std::string_view::npos) {
        std::size_t size = 0;
        utf8::decode_at(s_, pos, size);
        syntax_error("unexpected character '" + std::string(s_.substr(pos, size)) + "'", pos);
      }
      if (c == '(' || c == '[' || c == '{') ++depth;
      if ((c == ')' || c == ']' || c == '}') && depth > 0) --depth;
    }
    t.end = end;
    t.raw = s_.substr(pos, end - pos);
    tokens_.push_back(std::move(t));
    return end;
  }

  // Digits with "_" separators starting at `pos`; returns the end.
  std::size_t digits(std::size_t pos, bool (*accept)(char)) const {
    while (pos < s_.size() && (accept(s_[pos]) || (s_[pos] == '_' && pos + 1 < s_.size() && accept(s_[pos + 1]))))
      ++pos;
    return pos;
  }

  std::size_t lex_number(std::size_t pos, token& t) {
    auto clean = [](std::string_view text) {
      std::string out;
      for (char ch : text)
        if (ch != '_') out += ch;
      return out;
    };
    if (s_[pos] == '0' && pos + 1 < s_.size() && std::string_view("bBoOxX").find(s_[pos + 1]) != std::string_view::npos) {
      const char prefix = static_cast<char>(s_[pos + 1] | 0x20);
      const int base = prefix == 'b' ? 2 : (prefix == 'o' ? 8 : 16);
      auto accept = prefix == 'b' ? +[](char ch) { return ch == '0' || ch == '1'; }
                    : prefix == 'o' ? +[](char ch) { return ch >= '0' && ch <= '7'; }
                                    : +[](char ch) { return is_digit(ch) || ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'f'); };
      std::size_t start = pos + 2;
      if (start < s_.size() && s_[start] == '_') ++start;
      const std::size_t end = digits(start, accept);
      const auto text = clean(s_.substr(start, end - start));
      t.kind = token_kind::integer;
      auto res = std::from_chars(text.data(), text.data() + text.size(), t.integer, base);
      if (text.empty() || res.ec != std::errc()) syntax_error("invalid integer literal", pos);
      return end;
    }
    std::size_t end = digits(pos, is_digit);
    bool is_float = false;
    const bool after_dot = pos > 0 && s_[pos - 1] == '.';
    if (!after_dot && end + 1 < s_.size() && s_[end] == '.' && is_digit(s_[end + 1])) {
      end = digits(end + 1, is_digit);
      is_float = true;
    }
    if (!after_dot && end < s_.size() && (s_[end] == 'e' || s_[end] == 'E')) {
      std::size_t p = end + 1;
      if (p < s_.size() && (s_[p] == '+' || s_[p] == '-')) ++p;
      if (p < s_.size() && is_digit(s_[p])) {
        end = digits(p, is_digit);
        is_float = true;
      }
    }
    const auto text = clean(s_.substr(pos, end - pos));
    if (is_float) {
      t.kind = token_kind::floating;
      t.floating = std::strtod(text.c_str(), nullptr);
    } else {
      t.kind = token_kind::integer;
      auto res = std::from_chars(text.data(), text.data() + text.size(), t.integer);
      if (res.ec != std::errc()) syntax_error("integer literal out of range", pos);
    }
    return end;
  }

  std::string_view s_;
  std::vector<token> tokens_;
};

}  // namespace

std::string normalize_newlines(std::string_view source) {
  std::string out;
  out.reserve(source.size());
  for (std::size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      out += '\n';
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      out += source[i];
    }
  }
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

std::vector<token> tokenize(std::string_view source) { return lexer(source).run(); }

}  // namespace chatai::engine::jinja
