// Template values: conversion from JSON, printing, comparison and JSON output as Python does them.
#include "template_value.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>

#include "unicode.hpp"

namespace chatai::engine::jinja {

void fail(std::string message) { throw template_error(errc::invalid_argument, std::move(message)); }

void fail_unsupported(std::string message) { throw template_error(errc::unsupported, std::move(message)); }

void check_size(std::size_t size) {
  if (size > max_value_size)
    throw template_error(errc::resource_exhausted, "the template builds a value larger than " +
                                                       std::to_string(max_value_size >> 20) + " MiB");
}

value object::attribute(std::string_view) const { return value::undefined(nullptr); }

value object::call(interpreter&, arguments&) { fail("'" + std::string(type_name()) + "' object is not callable"); }

const value* dict_data::find(const value& key) const {
  if (key.is_string()) return find(std::string_view(key.as_string()));
  for (const auto& [k, v] : entries)
    if (equals(k, key)) return &v;
  return nullptr;
}

const value* dict_data::find(std::string_view key) const {
  for (const auto& [k, v] : entries)
    if (k.is_string() && k.as_string() == key) return &v;
  return nullptr;
}

void dict_data::set(value key, value item) {
  for (auto& [k, v] : entries) {
    if (equals(k, key)) {
      v = std::move(item);
      return;
    }
  }
  entries.emplace_back(std::move(key), std::move(item));
}

value value::list(std::vector<value> items, bool is_tuple) {
  auto data = std::make_shared<list_data>();
  data->items = std::move(items);
  data->is_tuple = is_tuple;
  value v;
  v.data_ = std::move(data);
  return v;
}

value value::from_json(const rapidjson::Value& json) {
  switch (json.GetType()) {
    case rapidjson::kNullType:
      return none();
    case rapidjson::kFalseType:
      return boolean(false);
    case rapidjson::kTrueType:
      return boolean(true);
    case rapidjson::kStringType:
      return string(std::string(json.GetString(), json.GetStringLength()));
    case rapidjson::kNumberType:
      if (json.IsInt64()) return integer(json.GetInt64());
      if (json.IsUint64()) fail("the integer " + std::to_string(json.GetUint64()) + " is too large");
      return floating(json.GetDouble());
    case rapidjson::kArrayType: {
      std::vector<value> items;
      items.reserve(json.Size());
      for (const auto& item : json.GetArray()) items.push_back(from_json(item));
      return list(std::move(items));
    }
    case rapidjson::kObjectType: {
      auto d = std::make_shared<dict_data>();
      d->entries.reserve(json.MemberCount());
      for (const auto& m : json.GetObject())
        d->set(string(std::string(m.name.GetString(), m.name.GetStringLength())), from_json(m.value));
      return dict(std::move(d));
    }
  }
  return none();
}

double value::to_double() const {
  if (is_float()) return as_float();
  return static_cast<double>(to_integer());
}

std::string_view type_name(const value& v) {
  switch (v.type()) {
    case value::kind::undefined: return "Undefined";
    case value::kind::none: return "NoneType";
    case value::kind::boolean: return "bool";
    case value::kind::integer: return "int";
    case value::kind::floating: return "float";
    case value::kind::string: return "str";
    case value::kind::list: return v.as_list().is_tuple ? "tuple" : "list";
    case value::kind::dict: return "dict";
    case value::kind::object: return v.as_object().type_name();
  }
  return "object";
}

bool truthy(const value& v) {
  switch (v.type()) {
    case value::kind::undefined:
    case value::kind::none: return false;
    case value::kind::boolean: return v.as_bool();
    case value::kind::integer: return v.as_int() != 0;
    case value::kind::floating: return v.as_float() != 0.0;
    case value::kind::string: return !v.as_string().empty();
    case value::kind::list: return !v.as_list().items.empty();
    case value::kind::dict: return !v.as_dict().entries.empty();
    case value::kind::object: return true;
  }
  return false;
}

std::string float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
  std::string_view sci(buf, static_cast<std::size_t>(res.ptr - buf));
  std::string out;
  if (sci.front() == '-') {
    out += '-';
    sci.remove_prefix(1);
  }
  const auto e_pos = sci.find('e');
  std::string digits;
  for (char c : sci.substr(0, e_pos))
    if (c != '.') digits += c;
  int exponent = 0;
  const auto exp_text = sci.substr(e_pos + 1);
  std::from_chars(exp_text.data() + (exp_text.front() == '+' ? 1 : 0), exp_text.data() + exp_text.size(), exponent);
  const int n = static_cast<int>(digits.size());
  if (exponent >= -4 && exponent < 16) {
    if (exponent >= n - 1) {
      out += digits;
      out.append(static_cast<std::size_t>(exponent - (n - 1)), '0');
      out += ".0";
    } else if (exponent >= 0) {
      out += digits.substr(0, static_cast<std::size_t>(exponent + 1));
      out += '.';
      out += digits.substr(static_cast<std::size_t>(exponent + 1));
    } else {
      out += "0.";
      out.append(static_cast<std::size_t>(-exponent - 1), '0');
      out += digits;
    }
  } else {
    out += digits[0];
    if (n > 1) {
      out += '.';
      out += digits.substr(1);
    }
    out += exponent < 0 ? "e-" : "e+";
    const int magnitude = std::abs(exponent);
    if (magnitude < 10) out += '0';
    out += std::to_string(magnitude);
  }
  return out;
}

namespace {

// Python's str.isprintable() for one code point: not a control, format, surrogate, private-use,
// unassigned or separator character (the space excepted).
bool python_printable(char32_t c) {
  if (c == ' ') return true;
  return (unicode::classes_of(c) & (unicode::other | unicode::separator)) == 0;
}

void append_hex(std::string& out, char prefix, std::uint32_t c, int digits) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "\\%c%0*x", prefix, digits, c);
  out += buf;
}

void append_string_repr(std::string& out, std::string_view s) {
  const bool has_single = s.find('\'') != std::string_view::npos;
  const bool has_double = s.find('"') != std::string_view::npos;
  const char quote = has_single && !has_double ? '"' : '\'';
  out += quote;
  for (char32_t c : utf8::decode(s)) {
    if (c == static_cast<char32_t>(quote) || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (python_printable(c)) {
      utf8::append(out, c);
    } else if (c < 0x100) {
      append_hex(out, 'x', c, 2);
    } else if (c < 0x10000) {
      append_hex(out, 'u', c, 4);
    } else {
      append_hex(out, 'U', c, 8);
    }
  }
  out += quote;
}

void append_repr(std::string& out, const value& v) {
  switch (v.type()) {
    case value::kind::string:
      append_string_repr(out, v.as_string());
      return;
    case value::kind::list: {
      const auto& l = v.as_list();
      out += l.is_tuple ? '(' : '[';
      for (std::size_t i = 0; i < l.items.size(); ++i) {
        if (i) out += ", ";
        append_repr(out, l.items[i]);
      }
      if (l.is_tuple && l.items.size() == 1) out += ',';
      out += l.is_tuple ? ')' : ']';
      return;
    }
    case value::kind::dict: {
      out += '{';
      bool first = true;
      for (const auto& [k, item] : v.as_dict().entries) {
        if (!first) out += ", ";
        first = false;
        append_repr(out, k);
        out += ": ";
        append_repr(out, item);
      }
      out += '}';
      return;
    }
    case value::kind::undefined:
      return;
    default:
      append_str(out, v);
  }
}

}  // namespace

void append_str(std::string& out, const value& v) {
  switch (v.type()) {
    case value::kind::undefined: return;
    case value::kind::none: out += "None"; return;
    case value::kind::boolean: out += v.as_bool() ? "True" : "False"; return;
    case value::kind::integer: out += std::to_string(v.as_int()); return;
    case value::kind::floating: out += float_repr(v.as_float()); return;
    case value::kind::string: out += v.as_string(); return;
    case value::kind::list:
    case value::kind::dict: append_repr(out, v); return;
    case value::kind::object: out += v.as_object().repr(); return;
  }
}

std::string to_str(const value& v) {
  if (v.is_string()) return v.as_string();
  std::string out;
  append_str(out, v);
  return out;
}

std::string repr(const value& v) {
  std::string out;
  append_repr(out, v);
  return out;
}

bool equals(const value& a, const value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.is_float() || b.is_float()) return a.to_double() == b.to_double();
    return a.to_integer() == b.to_integer();
  }
  if (a.type() != b.type()) return false;
  switch (a.type()) {
    case value::kind::undefined:
    case value::kind::none: return true;
    case value::kind::string: return a.as_string() == b.as_string();
    case value::kind::list: {
      const auto& x = a.as_list();
      const auto& y = b.as_list();
      if (x.is_tuple != y.is_tuple || x.items.size() != y.items.size()) return false;
      for (std::size_t i = 0; i < x.items.size(); ++i)
        if (!equals(x.items[i], y.items[i])) return false;
      return true;
    }
    case value::kind::dict: {
      const auto& x = a.as_dict();
      const auto& y = b.as_dict();
      if (x.entries.size() != y.entries.size()) return false;
      for (const auto& [k, item] : x.entries) {
        const value* other = y.find(k);
        if (!other || !equals(item, *other)) return false;
      }
      return true;
    }
    case value::kind::object: return a.object_ptr() == b.object_ptr();
    default: return false;
  }
}

int compare(const value& a, const value& b, std::string_view op) {
  if (a.is_number() && b.is_number()) {
    if (a.is_float() || b.is_float()) {
      const double x = a.to_double(), y = b.to_double();
      return x < y ? -1 : (x > y ? 1 : 0);
    }
    const auto x = a.to_integer(), y = b.to_integer();
    return x < y ? -1 : (x > y ? 1 : 0);
  }
  if (a.is_string() && b.is_string()) {
    const int c = a.as_string().compare(b.as_string());
    return c < 0 ? -1 : (c > 0 ? 1 : 0);
  }
  if (a.is_list() && b.is_list() && a.as_list().is_tuple == b.as_list().is_tuple) {
    const auto& x = a.as_list().items;
    const auto& y = b.as_list().items;
    for (std::size_t i = 0; i < x.size() && i < y.size(); ++i)
      if (!equals(x[i], y[i])) return compare(x[i], y[i], op);
    return x.size() < y.size() ? -1 : (x.size() > y.size() ? 1 : 0);
  }
  fail("'" + std::string(op) + "' not supported between instances of '" + std::string(type_name(a)) + "' and '" +
       std::string(type_name(b)) + "'");
}

std::vector<value> iterate(const value& v) {
  switch (v.type()) {
    case value::kind::undefined: return {};
    case value::kind::list: return v.as_list().items;
    case value::kind::dict: {
      std::vector<value> keys;
      keys.reserve(v.as_dict().entries.size());
      for (const auto& entry : v.as_dict().entries) keys.push_back(entry.first);
      return keys;
    }
    case value::kind::string: {
      std::vector<value> chars;
      for (char32_t c : utf8::decode(v.as_string())) {
        std::string s;
        utf8::append(s, c);
        chars.push_back(value::string(std::move(s)));
      }
      return chars;
    }
    default: fail("'" + std::string(type_name(v)) + "' object is not iterable");
  }
}

std::int64_t length(const value& v) {
  switch (v.type()) {
    case value::kind::undefined: return 0;
    case value::kind::string: return static_cast<std::int64_t>(utf8::length(v.as_string()));
    case value::kind::list: return static_cast<std::int64_t>(v.as_list().items.size());
    case value::kind::dict: return static_cast<std::int64_t>(v.as_dict().entries.size());
    default: fail("object of type '" + std::string(type_name(v)) + "' has no len()");
  }
}

namespace {

void append_json_string(std::string& out, std::string_view s, bool ensure_ascii) {
  out += '"';
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char ch = s[i];
    const auto c = static_cast<unsigned char>(ch);
    if (c >= 0x80 && ensure_ascii) {
      std::size_t size = 0;
      char32_t cp = utf8::decode_at(s, i, size);
      i += size - 1;
      if (cp >= 0x10000) {
        cp -= 0x10000;
        append_hex(out, 'u', 0xD800 + (cp >> 10), 4);
        append_hex(out, 'u', 0xDC00 + (cp & 0x3FF), 4);
      } else {
        append_hex(out, 'u', cp, 4);
      }
      continue;
    }
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) {
          append_hex(out, 'u', c, 4);
        } else {
          out += ch;
        }
    }
  }
  out += '"';
}

std::string json_key(const value& key) {
  switch (key.type()) {
    case value::kind::string: return key.as_string();
    case value::kind::integer: return std::to_string(key.as_int());
    case value::kind::floating: return float_repr(key.as_float());
    case value::kind::boolean: return key.as_bool() ? "true" : "false";
    case value::kind::none: return "null";
    default: fail("keys must be str, int, float, bool or None, not " + std::string(type_name(key)));
  }
}

void append_json(std::string& out, const value& v, const json_format& format, int depth) {
  auto newline = [&](int level) {
    out += '\n';
    for (int i = 0; i < level; ++i) out += *format.indent;
  };
  switch (v.type()) {
    case value::kind::none: out += "null"; return;
    case value::kind::boolean: out += v.as_bool() ? "true" : "false"; return;
    case value::kind::integer: out += std::to_string(v.as_int()); return;
    case value::kind::floating: {
      const double d = v.as_float();
      if (std::isnan(d)) out += "NaN";
      else if (std::isinf(d)) out += d > 0 ? "Infinity" : "-Infinity";
      else out += float_repr(d);
      return;
    }
    case value::kind::string: append_json_string(out, v.as_string(), format.ensure_ascii); return;
    case value::kind::list: {
      const auto& items = v.as_list().items;
      if (items.empty()) {
        out += "[]";
        return;
      }
      out += '[';
      for (std::size_t i = 0; i < items.size(); ++i) {
        if (i) out += format.item_separator;
        if (format.indent) newline(depth + 1);
        append_json(out, items[i], format, depth + 1);
      }
      if (format.indent) newline(depth);
      out += ']';
      return;
    }
    case value::kind::dict: {
      const auto& entries = v.as_dict().entries;
      if (entries.empty()) {
        out += "{}";
        return;
      }
      std::vector<std::pair<std::string, const value*>> members;
      members.reserve(entries.size());
      for (const auto& [k, item] : entries) members.emplace_back(json_key(k), &item);
      if (format.sort_keys)
        std::stable_sort(members.begin(), members.end(), [](const auto& x, const auto& y) { return x.first < y.first; });
      out += '{';
      for (std::size_t i = 0; i < members.size(); ++i) {
        if (i) out += format.item_separator;
        if (format.indent) newline(depth + 1);
        append_json_string(out, members[i].first, format.ensure_ascii);
        out += format.key_separator;
        append_json(out, *members[i].second, format, depth + 1);
      }
      if (format.indent) newline(depth);
      out += '}';
      return;
    }
    default: fail("Object of type " + std::string(type_name(v)) + " is not JSON serializable");
  }
}

}  // namespace

std::string to_json(const value& v, const json_format& format) {
  std::string out;
  append_json(out, v, format, 0);
  return out;
}

namespace utf8 {

char32_t decode_at(std::string_view s, std::size_t i, std::size_t& size) {
  const auto c = static_cast<unsigned char>(s[i]);
  std::size_t n = 0;
  char32_t cp = c;
  if (c >= 0xF0 && c < 0xF8) { n = 3; cp = c & 0x07; }
  else if (c >= 0xE0 && c < 0xF0) { n = 2; cp = c & 0x0F; }
  else if (c >= 0xC0 && c < 0xE0) { n = 1; cp = c & 0x1F; }
  if (i + n >= s.size() && n > 0) {
    size = 1;
    return c;
  }
  for (std::size_t k = 1; k <= n; ++k) {
    const auto cc = static_cast<unsigned char>(s[i + k]);
    if ((cc & 0xC0) != 0x80) {
      size = 1;
      return c;
    }
    cp = (cp << 6) | (cc & 0x3F);
  }
  size = n + 1;
  return cp;
}

std::size_t previous(std::string_view s, std::size_t i) {
  std::size_t start = i - 1;
  while (start > 0 && i - start < 4 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
  std::size_t size = 0;
  decode_at(s, start, size);
  return start + size == i ? start : i - 1;
}

std::u32string decode(std::string_view s) {
  std::u32string out;
  out.reserve(s.size());
  for (std::size_t i = 0, size = 0; i < s.size(); i += size) out += decode_at(s, i, size);
  return out;
}

void append(std::string& out, char32_t c) {
  if (c < 0x80) {
    out += static_cast<char>(c);
  } else if (c < 0x800) {
    out += static_cast<char>(0xC0 | (c >> 6));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    out += static_cast<char>(0xE0 | (c >> 12));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (c >> 18));
    out += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  }
}

std::string encode(std::u32string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t c : s) append(out, c);
  return out;
}

bool is_ascii(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
}

std::size_t length(std::string_view s) {
  if (is_ascii(s)) return s.size();
  return decode(s).size();
}

}  // namespace utf8

bool is_python_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

std::string_view strip_space(std::string_view s, bool left, bool right) {
  std::size_t begin = 0, end = s.size(), size = 0;
  while (left && begin < end && is_python_space(utf8::decode_at(s, begin, size))) begin += size;
  while (right && end > begin) {
    const std::size_t start = utf8::previous(s, end);
    if (!is_python_space(utf8::decode_at(s, start, size))) break;
    end = start;
  }
  return s.substr(begin, end - begin);
}

char32_t to_upper(char32_t c) {
  if (c >= 'a' && c <= 'z') return c - 32;
  if (c < 0x80) return c;
  if ((c >= 0xE0 && c <= 0xFE && c != 0xF7)) return c - 32;
  if (c == 0xFF) return 0x178;
  if (c == 0xB5) return 0x39C;
  if (c >= 0x100 && c <= 0x17F) {
    if ((c >= 0x100 && c <= 0x12F) || (c >= 0x132 && c <= 0x137) || (c >= 0x14A && c <= 0x177))
      return (c & 1) ? c - 1 : c;
    if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17E)) return (c & 1) ? c : c - 1;
    if (c == 0x131) return 'I';
    if (c == 0x17F) return 'S';
    return c;
  }
  if (c >= 0x3B1 && c <= 0x3C9 && c != 0x3C2) return c - 32;
  if (c == 0x3C2) return 0x3A3;
  if (c >= 0x430 && c <= 0x44F) return c - 32;
  if (c >= 0x450 && c <= 0x45F) return c - 80;
  if (c >= 0xFF41 && c <= 0xFF5A) return c - 32;
  return c;
}

char32_t to_lower(char32_t c) {
  if (c >= 'A' && c <= 'Z') return c + 32;
  if (c < 0x80) return c;
  if (c >= 0xC0 && c <= 0xDE && c != 0xD7) return c + 32;
  if (c == 0x178) return 0xFF;
  if (c >= 0x100 && c <= 0x17F) {
    if ((c >= 0x100 && c <= 0x12F) || (c >= 0x132 && c <= 0x137) || (c >= 0x14A && c <= 0x177))
      return (c & 1) ? c : c + 1;
    if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17E)) return (c & 1) ? c + 1 : c;
    if (c == 0x130) return 'i';
    return c;
  }
  if (c >= 0x391 && c <= 0x3A9 && c != 0x3A2) return c + 32;
  if (c >= 0x410 && c <= 0x42F) return c + 32;
  if (c >= 0x400 && c <= 0x40F) return c + 80;
  if (c >= 0xFF21 && c <= 0xFF3A) return c + 32;
  return c;
}

bool is_cased_letter(char32_t c) {
  return to_upper(c) != c || to_lower(c) != c || c == 0xDF || c == 0x138 || c == 0x149;
}

std::string upper(std::string_view s) {
  if (utf8::is_ascii(s)) {
    std::string out(s);
    for (auto& c : out)
      if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 32);
    return out;
  }
  auto cps = utf8::decode(s);
  for (auto& c : cps) c = to_upper(c);
  return utf8::encode(cps);
}

std::string lower(std::string_view s) {
  if (utf8::is_ascii(s)) {
    std::string out(s);
    for (auto& c : out)
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
    return out;
  }
  auto cps = utf8::decode(s);
  for (auto& c : cps) c = to_lower(c);
  return utf8::encode(cps);
}

}  // namespace chatai::engine::jinja
