// Filters, tests, global functions and str/list/dict methods, following Jinja2 and Python.
#include "template_builtins.hpp"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <initializer_list>
#include <limits>

#include "template_eval.hpp"
#include "template_strings.hpp"

namespace chatai::engine::jinja {

namespace {

// Binds call arguments to parameter names the way Python does.
class params {
 public:
  params(std::string_view callee, arguments& args, std::initializer_list<std::string_view> names)
      : names_(names), slots_(names.size(), nullptr) {
    if (args.positional.size() > names_.size())
      fail(std::string(callee) + "() takes at most " + std::to_string(names_.size()) + " argument(s) (" +
           std::to_string(args.positional.size()) + " given)");
    for (std::size_t i = 0; i < args.positional.size() && i < names_.size(); ++i) slots_[i] = &args.positional[i];
    for (auto& [name, v] : args.named) {
      auto it = std::find(names_.begin(), names_.end(), name);
      if (it == names_.end())
        fail(std::string(callee) + "() got an unexpected keyword argument '" + std::string(name) + "'");
      auto& slot = slots_[static_cast<std::size_t>(it - names_.begin())];
      if (slot) fail(std::string(callee) + "() got multiple values for argument '" + std::string(name) + "'");
      slot = &v;
    }
  }

  bool has(std::size_t i) const { return slots_[i] != nullptr; }
  const value& get(std::size_t i) const {
    static const value missing;
    return slots_[i] ? *slots_[i] : missing;
  }
  value get_or(std::size_t i, value fallback) const { return slots_[i] ? *slots_[i] : std::move(fallback); }
  bool flag(std::size_t i, bool fallback) const { return slots_[i] ? truthy(*slots_[i]) : fallback; }
  std::string text(std::size_t i, std::string_view what) const {
    const value& v = get(i);
    if (!v.is_string())
      fail(std::string(what) + " must be a string, not " + std::string(type_name(v)));
    return v.as_string();
  }
  std::int64_t integer(std::size_t i, std::int64_t fallback, std::string_view what) const {
    if (!slots_[i] || slots_[i]->is_none()) return fallback;
    if (!slots_[i]->is_integral())
      fail(std::string(what) + " must be an integer, not " + std::string(type_name(*slots_[i])));
    return slots_[i]->to_integer();
  }

 private:
  std::vector<std::string_view> names_;
  std::vector<const value*> slots_;
};

void expect_no_args(std::string_view callee, arguments& args) { params p(callee, args, {}); }

// --- attribute paths ("a.b.0") as selectattr, map and sort take them ---

value attribute_path(interpreter& in, const value& item, std::string_view path) {
  value current = item;
  std::size_t start = 0;
  while (true) {
    const auto dot = path.find('.', start);
    const auto part = path.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    value key;
    if (!part.empty() && std::all_of(part.begin(), part.end(), [](char c) { return c >= '0' && c <= '9'; }))
      key = value::integer(std::stoll(std::string(part)));
    else
      key = value::string(std::string(part));
    current = in.get_item(current, key, nullptr);
    if (dot == std::string_view::npos) return current;
    start = dot + 1;
  }
}

std::string attribute_name(const value& v) {
  if (v.is_integral()) return std::to_string(v.to_integer());
  return str_arg(v, "attribute");
}

// A sort key: the attribute when given, lowercased unless case-sensitive.
value sort_key(interpreter& in, const value& item, const std::string* attribute, bool case_sensitive) {
  value key = attribute ? attribute_path(in, item, *attribute) : item;
  if (!case_sensitive && key.is_string()) return value::string(lower(key.as_string()));
  return key;
}

std::vector<value> sorted(interpreter& in, std::vector<value> items, bool reverse, bool case_sensitive,
                          const std::string* attribute) {
  std::vector<std::pair<value, value>> keyed;
  keyed.reserve(items.size());
  for (auto& item : items) {
    value key = sort_key(in, item, attribute, case_sensitive);
    keyed.emplace_back(std::move(key), std::move(item));
  }
  std::stable_sort(keyed.begin(), keyed.end(), [reverse](const auto& a, const auto& b) {
    return reverse ? compare(b.first, a.first, "<") < 0 : compare(a.first, b.first, "<") < 0;
  });
  std::vector<value> out;
  out.reserve(keyed.size());
  for (auto& k : keyed) out.push_back(std::move(k.second));
  return out;
}

// --- tests ---

bool test_defined(interpreter&, const value& v, arguments& args) {
  expect_no_args("defined", args);
  return !v.is_undefined();
}
bool test_undefined(interpreter&, const value& v, arguments& args) {
  expect_no_args("undefined", args);
  return v.is_undefined();
}
bool test_none(interpreter&, const value& v, arguments& args) {
  expect_no_args("none", args);
  return v.is_none();
}
bool test_string(interpreter&, const value& v, arguments& args) {
  expect_no_args("string", args);
  return v.is_string();
}
bool test_number(interpreter&, const value& v, arguments& args) {
  expect_no_args("number", args);
  return v.is_number();
}
bool test_integer(interpreter&, const value& v, arguments& args) {
  expect_no_args("integer", args);
  return v.is_int();
}
bool test_float(interpreter&, const value& v, arguments& args) {
  expect_no_args("float", args);
  return v.is_float();
}
bool test_boolean(interpreter&, const value& v, arguments& args) {
  expect_no_args("boolean", args);
  return v.is_bool();
}
bool test_true(interpreter&, const value& v, arguments& args) {
  expect_no_args("true", args);
  return v.is_bool() && v.as_bool();
}
bool test_false(interpreter&, const value& v, arguments& args) {
  expect_no_args("false", args);
  return v.is_bool() && !v.as_bool();
}
bool test_mapping(interpreter&, const value& v, arguments& args) {
  expect_no_args("mapping", args);
  return v.is_dict();
}
bool test_iterable(interpreter&, const value& v, arguments& args) {
  expect_no_args("iterable", args);
  return v.is_undefined() || v.is_string() || v.is_list() || v.is_dict();
}
bool test_sequence(interpreter&, const value& v, arguments& args) {
  expect_no_args("sequence", args);
  return v.is_undefined() || v.is_string() || v.is_list() || v.is_dict();
}
bool test_callable(interpreter&, const value& v, arguments& args) {
  expect_no_args("callable", args);
  return v.is_callable();
}
std::int64_t integer_operand(const value& v, std::string_view test) {
  if (!v.is_integral()) fail("the '" + std::string(test) + "' test needs an integer, not " + std::string(type_name(v)));
  return v.to_integer();
}
bool test_odd(interpreter&, const value& v, arguments& args) {
  expect_no_args("odd", args);
  return integer_operand(v, "odd") % 2 != 0;
}
bool test_even(interpreter&, const value& v, arguments& args) {
  expect_no_args("even", args);
  return integer_operand(v, "even") % 2 == 0;
}
bool test_divisibleby(interpreter&, const value& v, arguments& args) {
  params p("divisibleby", args, {"num"});
  const auto n = p.integer(0, 0, "divisibleby argument");
  if (n == 0) fail("integer division or modulo by zero");
  return integer_operand(v, "divisibleby") % n == 0;
}
bool test_lower(interpreter&, const value& v, arguments& args) {
  expect_no_args("lower", args);
  const std::string s = to_str(v);
  return lower(s) == s;
}
bool test_upper(interpreter&, const value& v, arguments& args) {
  expect_no_args("upper", args);
  const std::string s = to_str(v);
  return upper(s) == s;
}
value other_operand(std::string_view test, arguments& args) {
  params p(test, args, {"other"});
  if (!p.has(0)) fail("the '" + std::string(test) + "' test needs a value to compare with");
  return p.get(0);
}
bool test_eq(interpreter&, const value& v, arguments& args) { return equals(v, other_operand("eq", args)); }
bool test_ne(interpreter&, const value& v, arguments& args) { return !equals(v, other_operand("ne", args)); }
bool test_lt(interpreter&, const value& v, arguments& args) { return compare(v, other_operand("lt", args), "<") < 0; }
bool test_le(interpreter&, const value& v, arguments& args) { return compare(v, other_operand("le", args), "<=") <= 0; }
bool test_gt(interpreter&, const value& v, arguments& args) { return compare(v, other_operand("gt", args), ">") > 0; }
bool test_ge(interpreter&, const value& v, arguments& args) { return compare(v, other_operand("ge", args), ">=") >= 0; }
// Python's "is": containers by identity, scalars by value.
bool test_sameas(interpreter&, const value& v, arguments& args) {
  const value other = other_operand("sameas", args);
  if (v.type() != other.type()) return false;
  if (v.is_list()) return &v.as_list() == &other.as_list();
  if (v.is_dict()) return &v.as_dict() == &other.as_dict();
  return equals(v, other);
}
bool test_in(interpreter&, const value& v, arguments& args) {
  const value seq = other_operand("in", args);
  if (seq.is_string()) return v.is_string() && seq.as_string().find(v.as_string()) != std::string::npos;
  if (seq.is_dict()) return seq.as_dict().find(v) != nullptr;
  for (const auto& item : iterate(seq))
    if (equals(item, v)) return true;
  return false;
}

struct named_test {
  std::string_view name;
  test_fn fn;
};

constexpr named_test tests[] = {
    {"defined", test_defined},   {"undefined", test_undefined}, {"none", test_none},
    {"string", test_string},     {"number", test_number},       {"integer", test_integer},
    {"float", test_float},       {"boolean", test_boolean},     {"true", test_true},
    {"false", test_false},       {"mapping", test_mapping},     {"iterable", test_iterable},
    {"sequence", test_sequence}, {"callable", test_callable},   {"odd", test_odd},
    {"even", test_even},         {"divisibleby", test_divisibleby}, {"lower", test_lower},
    {"upper", test_upper},       {"eq", test_eq},               {"equalto", test_eq},
    {"==", test_eq},             {"ne", test_ne},               {"!=", test_ne},
    {"lt", test_lt},             {"lessthan", test_lt},         {"<", test_lt},
    {"le", test_le},             {"<=", test_le},               {"gt", test_gt},
    {"greaterthan", test_gt},    {">", test_gt},                {"ge", test_ge},
    {">=", test_ge},             {"sameas", test_sameas},       {"in", test_in},
};

// Applies the test named by args[first] (with the rest as its arguments) to `v`; no name
// means truthiness.
bool run_named_test(interpreter& in, const value& v, const arguments& args, std::size_t first) {
  if (args.positional.size() <= first) return truthy(v);
  const std::string name = str_arg(args.positional[first], "test name");
  const test_fn fn = find_test(name);
  if (!fn) {
    if (is_jinja_test(name)) fail_unsupported("the test '" + name + "' is not supported");
    fail("no test named '" + name + "'");
  }
  arguments rest;
  rest.positional.assign(args.positional.begin() + static_cast<std::ptrdiff_t>(first) + 1, args.positional.end());
  return fn(in, v, rest);
}

// --- filters ---

value filter_abs(interpreter&, const value& v, arguments& args) {
  expect_no_args("abs", args);
  if (v.is_float()) return value::floating(std::fabs(v.as_float()));
  if (v.is_integral()) {
    if (v.to_integer() == std::numeric_limits<std::int64_t>::min()) fail("integer overflow");
    return value::integer(std::llabs(v.to_integer()));
  }
  fail("bad operand type for abs(): '" + std::string(type_name(v)) + "'");
}

value filter_batch(interpreter&, const value& v, arguments& args) {
  params p("batch", args, {"linecount", "fill_with"});
  const auto size = p.integer(0, 0, "linecount");
  if (size <= 0) fail("batch size must be positive");
  std::vector<value> batches, current;
  for (auto& item : iterate(v)) {
    current.push_back(std::move(item));
    if (static_cast<std::int64_t>(current.size()) == size) batches.push_back(value::list(std::exchange(current, {})));
  }
  if (!current.empty()) {
    if (p.has(1) && !p.get(1).is_none())
      while (static_cast<std::int64_t>(current.size()) < size) current.push_back(p.get(1));
    batches.push_back(value::list(std::move(current)));
  }
  return value::list(std::move(batches));
}

value filter_capitalize(interpreter&, const value& v, arguments& args) {
  expect_no_args("capitalize", args);
  return value::string(capitalize(to_str(v)));
}

value filter_center(interpreter&, const value& v, arguments& args) {
  params p("center", args, {"width"});
  const auto width = p.integer(0, 80, "width");
  const auto s = utf8::decode(to_str(v));
  const auto len = static_cast<std::int64_t>(s.size());
  if (width <= len) return value::string(utf8::encode(s));
  check_size(static_cast<std::size_t>(std::min<std::int64_t>(width, max_value_size + 1)));
  const auto pad = width - len;
  const auto left = pad / 2 + (pad & width & 1);
  std::string out(static_cast<std::size_t>(left), ' ');
  out += utf8::encode(s);
  out.append(static_cast<std::size_t>(pad - left), ' ');
  return value::string(std::move(out));
}

value filter_length(interpreter&, const value& v, arguments& args) {
  expect_no_args("length", args);
  return value::integer(length(v));
}

value filter_default(interpreter&, const value& v, arguments& args) {
  params p("default", args, {"default_value", "boolean"});
  const bool use_default = v.is_undefined() || (p.flag(1, false) && !truthy(v));
  return use_default ? p.get_or(0, value::string("")) : v;
}

value filter_dictsort(interpreter& in, const value& v, arguments& args) {
  params p("dictsort", args, {"case_sensitive", "by", "reverse"});
  if (!v.is_dict()) fail("dictsort expects a mapping, not " + std::string(type_name(v)));
  const std::string by = p.has(1) ? p.text(1, "by") : "key";
  if (by != "key" && by != "value") fail("You can only sort by either 'key' or 'value'");
  const std::string index = by == "key" ? "0" : "1";
  std::vector<value> items;
  for (const auto& [k, item] : v.as_dict().entries) items.push_back(value::list({k, item}, true));
  return value::list(sorted(in, std::move(items), p.flag(2, false), p.flag(0, false), &index));
}

std::string html_escape(std::string_view s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

value filter_escape(interpreter&, const value& v, arguments& args) {
  expect_no_args("escape", args);
  return value::string(html_escape(to_str(v)));
}

value filter_first(interpreter&, const value& v, arguments& args) {
  expect_no_args("first", args);
  if (v.is_list()) return v.as_list().items.empty() ? value::undefined(nullptr) : v.as_list().items.front();
  auto items = iterate(v);
  return items.empty() ? value::undefined(nullptr) : items.front();
}

value filter_last(interpreter&, const value& v, arguments& args) {
  expect_no_args("last", args);
  if (v.is_list()) return v.as_list().items.empty() ? value::undefined(nullptr) : v.as_list().items.back();
  auto items = iterate(v);
  return items.empty() ? value::undefined(nullptr) : items.back();
}

// Python's float() of a string, or nothing.
bool parse_float(std::string_view text, double& out) {
  std::string s(strip_space(text, true, true));
  s.erase(std::remove(s.begin(), s.end(), '_'), s.end());
  if (s.empty()) return false;
  char* end = nullptr;
  out = std::strtod(s.c_str(), &end);
  return end == s.c_str() + s.size();
}

value filter_float(interpreter&, const value& v, arguments& args) {
  params p("float", args, {"default"});
  if (v.is_number()) return value::floating(v.to_double());
  double d = 0;
  if (v.is_string() && parse_float(v.as_string(), d)) return value::floating(d);
  return p.get_or(0, value::floating(0.0));
}

value filter_int(interpreter&, const value& v, arguments& args) {
  params p("int", args, {"default", "base"});
  if (v.is_float()) {
    if (!std::isfinite(v.as_float())) return p.get_or(0, value::integer(0));
    return value::integer(static_cast<std::int64_t>(std::trunc(v.as_float())));
  }
  if (v.is_integral()) return value::integer(v.to_integer());
  if (v.is_string()) {
    std::string s(strip_space(v.as_string(), true, true));
    s.erase(std::remove(s.begin(), s.end(), '_'), s.end());
    const auto base = p.integer(1, 10, "base");
    char* end = nullptr;
    errno = 0;
    const long long n = std::strtoll(s.c_str(), &end, static_cast<int>(base));
    if (!s.empty() && end == s.c_str() + s.size() && errno == 0) return value::integer(n);
    double d = 0;
    if (parse_float(v.as_string(), d) && std::isfinite(d)) return value::integer(static_cast<std::int64_t>(std::trunc(d)));
  }
  return p.get_or(0, value::integer(0));
}

value filter_format(interpreter&, const value& v, arguments& args) {
  return value::string(percent_format(str_arg(v, "format string"), args, false));
}

value filter_indent(interpreter&, const value& v, arguments& args) {
  params p("indent", args, {"width", "first", "blank"});
  std::string indentation;
  if (p.has(0) && p.get(0).is_string()) indentation = p.get(0).as_string();
  else {
    const auto width = std::max<std::int64_t>(0, p.integer(0, 4, "width"));
    check_size(static_cast<std::size_t>(std::min<std::int64_t>(width, max_value_size + 1)));
    indentation.assign(static_cast<std::size_t>(width), ' ');
  }
  const auto lines = split_lines(to_str(v) + "\n", false);
  std::string out;
  if (p.flag(2, false)) {
    for (std::size_t i = 0; i < lines.size(); ++i) {
      if (i) out += "\n" + indentation;
      out += lines[i];
    }
  } else {
    for (std::size_t i = 0; i < lines.size(); ++i) {
      if (i) {
        out += '\n';
        if (!lines[i].empty()) out += indentation;
      }
      out += lines[i];
    }
  }
  if (p.flag(1, false)) out = indentation + out;
  return value::string(std::move(out));
}

value filter_items(interpreter&, const value& v, arguments& args) {
  expect_no_args("items", args);
  if (v.is_undefined()) return value::list();
  if (!v.is_dict()) fail("can only get item pairs from a mapping, not " + std::string(type_name(v)));
  std::vector<value> items;
  items.reserve(v.as_dict().entries.size());
  for (const auto& [k, item] : v.as_dict().entries) items.push_back(value::list({k, item}, true));
  return value::list(std::move(items));
}

value filter_join(interpreter& in, const value& v, arguments& args) {
  params p("join", args, {"d", "attribute"});
  const std::string separator = p.has(0) ? to_str(p.get(0)) : std::string();
  const std::string attribute = p.has(1) ? attribute_name(p.get(1)) : std::string();
  std::string out;
  bool first = true;
  for (const auto& item : iterate(v)) {
    if (!first) out += separator;
    first = false;
    append_str(out, p.has(1) ? attribute_path(in, item, attribute) : item);
    check_size(out.size());
  }
  return value::string(std::move(out));
}

value filter_list(interpreter&, const value& v, arguments& args) {
  expect_no_args("list", args);
  return value::list(iterate(v));
}

value filter_lower(interpreter&, const value& v, arguments& args) {
  expect_no_args("lower", args);
  return value::string(lower(to_str(v)));
}

value filter_upper(interpreter&, const value& v, arguments& args) {
  expect_no_args("upper", args);
  return value::string(upper(to_str(v)));
}

value filter_map(interpreter& in, const value& v, arguments& args) {
  std::vector<value> out;
  const value* attribute = nullptr;
  const value* fallback = nullptr;
  for (const auto& [name, arg] : args.named) {
    if (name == "attribute") attribute = &arg;
    else if (name == "default") fallback = &arg;
    else if (args.positional.empty()) fail("map() got an unexpected keyword argument '" + std::string(name) + "'");
  }
  if (attribute) {
    if (!args.positional.empty()) fail("map() takes either a filter name or attribute=, not both");
    const std::string path = attribute_name(*attribute);
    for (const auto& item : iterate(v)) {
      value x = attribute_path(in, item, path);
      out.push_back(x.is_undefined() && fallback ? *fallback : std::move(x));
    }
    return value::list(std::move(out));
  }
  if (args.positional.empty()) fail("map() needs a filter name or attribute=");
  const std::string name = str_arg(args.positional.front(), "filter name");
  const filter_fn fn = find_filter(name);
  if (!fn) {
    if (is_jinja_filter(name)) fail_unsupported("the filter '" + name + "' is not supported");
    fail("no filter named '" + name + "'");
  }
  for (const auto& item : iterate(v)) {
    arguments rest;
    rest.positional.assign(args.positional.begin() + 1, args.positional.end());
    rest.named = args.named;
    out.push_back(fn(in, item, rest));
  }
  return value::list(std::move(out));
}

value min_or_max(interpreter& in, const value& v, arguments& args, bool want_max) {
  params p(want_max ? "max" : "min", args, {"case_sensitive", "attribute"});
  const std::string attribute = p.has(1) ? attribute_name(p.get(1)) : std::string();
  auto items = iterate(v);
  if (items.empty()) return value::undefined(nullptr);
  std::size_t best = 0;
  value best_key = sort_key(in, items[0], p.has(1) ? &attribute : nullptr, p.flag(0, false));
  for (std::size_t i = 1; i < items.size(); ++i) {
    value key = sort_key(in, items[i], p.has(1) ? &attribute : nullptr, p.flag(0, false));
    const int c = compare(key, best_key, want_max ? ">" : "<");
    if (want_max ? c > 0 : c < 0) {
      best = i;
      best_key = std::move(key);
    }
  }
  return items[best];
}

value filter_max(interpreter& in, const value& v, arguments& args) { return min_or_max(in, v, args, true); }
value filter_min(interpreter& in, const value& v, arguments& args) { return min_or_max(in, v, args, false); }

value select_items(interpreter& in, const value& v, const arguments& args, bool keep) {
  std::vector<value> out;
  for (auto& item : iterate(v))
    if (run_named_test(in, item, args, 0) == keep) out.push_back(std::move(item));
  return value::list(std::move(out));
}

value filter_select(interpreter& in, const value& v, arguments& args) { return select_items(in, v, args, true); }
value filter_reject(interpreter& in, const value& v, arguments& args) { return select_items(in, v, args, false); }

value select_by_attribute(interpreter& in, const value& v, const arguments& args, bool keep) {
  if (args.positional.empty()) fail("selectattr and rejectattr need an attribute name");
  const std::string path = attribute_name(args.positional.front());
  std::vector<value> out;
  for (auto& item : iterate(v))
    if (run_named_test(in, attribute_path(in, item, path), args, 1) == keep) out.push_back(std::move(item));
  return value::list(std::move(out));
}

value filter_selectattr(interpreter& in, const value& v, arguments& args) {
  return select_by_attribute(in, v, args, true);
}
value filter_rejectattr(interpreter& in, const value& v, arguments& args) {
  return select_by_attribute(in, v, args, false);
}

value filter_replace(interpreter&, const value& v, arguments& args) {
  params p("replace", args, {"old", "new", "count"});
  return value::string(replace_all(to_str(v), to_str(p.get(0)), to_str(p.get(1)), p.integer(2, -1, "count")));
}

value filter_reverse(interpreter&, const value& v, arguments& args) {
  expect_no_args("reverse", args);
  if (v.is_string()) {
    auto cps = utf8::decode(v.as_string());
    std::reverse(cps.begin(), cps.end());
    return value::string(utf8::encode(cps));
  }
  auto items = iterate(v);
  std::reverse(items.begin(), items.end());
  return value::list(std::move(items));
}

// Python's round(x, ndigits): exact decimal rounding, ties to even.
double round_half_even(double x, std::int64_t digits) {
  if (!std::isfinite(x)) return x;
  if (digits == 0) return std::nearbyint(x);
  if (digits < 0 || digits > 300) {
    const double scale = std::pow(10.0, static_cast<double>(-digits));
    return digits < 0 ? std::nearbyint(x / scale) * scale : x;
  }
  char buf[700];  // DBL_MAX has 309 integer digits, then up to 300 decimals
  std::snprintf(buf, sizeof buf, "%.*f", static_cast<int>(digits), x);
  return std::strtod(buf, nullptr);
}

value filter_round(interpreter&, const value& v, arguments& args) {
  params p("round", args, {"precision", "method"});
  const auto precision = p.integer(0, 0, "precision");
  const std::string method = p.has(1) ? p.text(1, "method") : "common";
  if (!v.is_number()) fail("round needs a number, not " + std::string(type_name(v)));
  if (method == "common") {
    if (v.is_integral()) return value::integer(v.to_integer());
    return value::floating(round_half_even(v.as_float(), precision));
  }
  if (method != "ceil" && method != "floor") fail("method must be common, ceil or floor");
  const double scale = std::pow(10.0, static_cast<double>(precision));
  const double x = v.to_double() * scale;
  return value::floating((method == "ceil" ? std::ceil(x) : std::floor(x)) / scale);
}

value filter_safe(interpreter&, const value& v, arguments& args) {
  expect_no_args("safe", args);
  return value::string(to_str(v));
}

value filter_sort(interpreter& in, const value& v, arguments& args) {
  params p("sort", args, {"reverse", "case_sensitive", "attribute"});
  const std::string attribute = p.has(2) ? attribute_name(p.get(2)) : std::string();
  return value::list(sorted(in, iterate(v), p.flag(0, false), p.flag(1, false), p.has(2) ? &attribute : nullptr));
}

value filter_string(interpreter&, const value& v, arguments& args) {
  expect_no_args("string", args);
  return value::string(to_str(v));
}

value filter_sum(interpreter& in, const value& v, arguments& args) {
  params p("sum", args, {"attribute", "start"});
  const std::string attribute = p.has(0) ? attribute_name(p.get(0)) : std::string();
  value total = p.get_or(1, value::integer(0));
  for (const auto& item : iterate(v)) {
    const value x = p.has(0) ? attribute_path(in, item, attribute) : item;
    if (!x.is_number() || !total.is_number())
      fail("unsupported operand type(s) for +: '" + std::string(type_name(total)) + "' and '" +
           std::string(type_name(x)) + "'");
    if (total.is_integral() && x.is_integral()) {
      std::int64_t out = 0;
      if (__builtin_add_overflow(total.to_integer(), x.to_integer(), &out)) fail("integer overflow");
      total = value::integer(out);
    } else {
      total = value::floating(total.to_double() + x.to_double());
    }
  }
  return total;
}

value filter_title(interpreter&, const value& v, arguments& args) {
  expect_no_args("title", args);
  return value::string(jinja_title(to_str(v)));
}

value filter_tojson(interpreter&, const value& v, arguments& args) {
  params p("tojson", args, {"ensure_ascii", "indent", "separators", "sort_keys"});
  json_format format;
  format.ensure_ascii = p.flag(0, false);
  format.sort_keys = p.flag(3, false);
  if (p.has(1) && !p.get(1).is_none()) {
    const value& indent = p.get(1);
    if (indent.is_string()) format.indent = indent.as_string();
    else format.indent = std::string(static_cast<std::size_t>(std::max<std::int64_t>(0, p.integer(1, 0, "indent"))), ' ');
    format.item_separator = ",";
  }
  if (p.has(2) && !p.get(2).is_none()) {
    const value& seps = p.get(2);
    if (!seps.is_list() || seps.as_list().items.size() != 2) fail("separators must be an (item, key) pair");
    format.item_separator = str_arg(seps.as_list().items[0], "item separator");
    format.key_separator = str_arg(seps.as_list().items[1], "key separator");
  }
  return value::string(to_json(v, format));
}

value filter_trim(interpreter&, const value& v, arguments& args) {
  params p("trim", args, {"chars"});
  return value::string(strip_chars(to_str(v), p.get(0), true, true));
}

value filter_unique(interpreter& in, const value& v, arguments& args) {
  params p("unique", args, {"case_sensitive", "attribute"});
  const std::string attribute = p.has(1) ? attribute_name(p.get(1)) : std::string();
  std::vector<value> out, seen;
  for (auto& item : iterate(v)) {
    value key = sort_key(in, item, p.has(1) ? &attribute : nullptr, p.flag(0, false));
    if (std::any_of(seen.begin(), seen.end(), [&](const value& s) { return equals(s, key); })) continue;
    seen.push_back(std::move(key));
    out.push_back(std::move(item));
  }
  return value::list(std::move(out));
}

value filter_wordcount(interpreter&, const value& v, arguments& args) {
  expect_no_args("wordcount", args);
  std::int64_t words = 0;
  bool in_word = false;
  for (char32_t c : utf8::decode(to_str(v))) {
    const bool w = is_word_char(c);
    if (w && !in_word) ++words;
    in_word = w;
  }
  return value::integer(words);
}

struct named_filter {
  std::string_view name;
  filter_fn fn;
};

constexpr named_filter filters[] = {
    {"abs", filter_abs},
    {"batch", filter_batch},
    {"capitalize", filter_capitalize},
    {"center", filter_center},
    {"count", filter_length},
    {"d", filter_default},
    {"default", filter_default},
    {"dictsort", filter_dictsort},
    {"e", filter_escape},
    {"escape", filter_escape},
    {"first", filter_first},
    {"float", filter_float},
    {"forceescape", filter_escape},
    {"format", filter_format},
    {"indent", filter_indent},
    {"int", filter_int},
    {"items", filter_items},
    {"join", filter_join},
    {"last", filter_last},
    {"length", filter_length},
    {"list", filter_list},
    {"lower", filter_lower},
    {"map", filter_map},
    {"max", filter_max},
    {"min", filter_min},
    {"reject", filter_reject},
    {"rejectattr", filter_rejectattr},
    {"replace", filter_replace},
    {"reverse", filter_reverse},
    {"round", filter_round},
    {"safe", filter_safe},
    {"select", filter_select},
    {"selectattr", filter_selectattr},
    {"sort", filter_sort},
    {"string", filter_string},
    {"sum", filter_sum},
    {"title", filter_title},
    {"tojson", filter_tojson},
    {"trim", filter_trim},
    {"unique", filter_unique},
    {"upper", filter_upper},
    {"wordcount", filter_wordcount},
};

constexpr std::string_view jinja_filters_not_implemented[] = {
    "attr", "filesizeformat", "groupby", "pprint", "random", "slice", "striptags",
    "truncate", "urlencode", "urlize", "wordwrap", "xmlattr"};
constexpr std::string_view jinja_tests_not_implemented[] = {"escaped", "filter", "test"};

// --- global functions ---

class builtin_function : public object {
 public:
  using fn_type = value (*)(interpreter&, arguments&);
  builtin_function(std::string_view name, fn_type fn) : name_(name), fn_(fn) {}
  std::string_view type_name() const override { return "builtin_function_or_method"; }
  std::string repr() const override { return "<built-in function " + std::string(name_) + ">"; }
  bool is_callable() const override { return true; }
  value call(interpreter& in, arguments& args) override { return fn_(in, args); }

 private:
  std::string_view name_;
  fn_type fn_;
};

// Hugging Face renders in Jinja2's sandbox, which refuses ranges longer than this.
constexpr std::int64_t max_range = 100000;

value fn_range(interpreter&, arguments& args) {
  if (!args.named.empty()) fail("range() takes no keyword arguments");
  if (args.positional.empty() || args.positional.size() > 3)
    fail("range expected 1 to 3 arguments, got " + std::to_string(args.positional.size()));
  std::int64_t bounds[3] = {0, 0, 1};
  for (std::size_t i = 0; i < args.positional.size(); ++i) {
    if (!args.positional[i].is_integral())
      fail("'" + std::string(type_name(args.positional[i])) + "' object cannot be interpreted as an integer");
  }
  if (args.positional.size() == 1) {
    bounds[1] = args.positional[0].to_integer();
  } else {
    for (std::size_t i = 0; i < args.positional.size(); ++i) bounds[i] = args.positional[i].to_integer();
  }
  const auto [start, stop, step] = bounds;
  if (step == 0) fail("range() arg 3 must not be zero");
  const double count = std::max(0.0, std::ceil((static_cast<double>(stop) - static_cast<double>(start)) /
                                               static_cast<double>(step)));
  if (count > static_cast<double>(max_range))
    fail("Range too big. The sandbox blocks ranges larger than MAX_RANGE (" + std::to_string(max_range) + ").");
  std::vector<value> out;
  out.reserve(static_cast<std::size_t>(count));
  for (std::int64_t i = start; step > 0 ? i < stop : i > stop; i += step) out.push_back(value::integer(i));
  return value::list(std::move(out));
}

value fn_namespace(interpreter& in, arguments& args) {
  auto ns = std::make_shared<namespace_object>();
  if (args.positional.size() > 1) fail("namespace() takes at most one positional argument");
  if (!args.positional.empty()) {
    const value& init = args.positional.front();
    if (!init.is_dict()) fail("namespace() takes a mapping, not " + std::string(type_name(init)));
    for (const auto& [k, v] : init.as_dict().entries) ns->set(str_arg(k, "namespace key"), v);
  }
  for (auto& [name, v] : args.named) ns->set(name, v);
  return in.make_object(std::move(ns));
}

value fn_dict(interpreter&, arguments& args) {
  auto d = std::make_shared<dict_data>();
  if (args.positional.size() > 1) fail("dict expected at most 1 argument");
  if (!args.positional.empty()) {
    const value& init = args.positional.front();
    if (!init.is_dict()) fail("dict() takes a mapping, not " + std::string(type_name(init)));
    *d = init.as_dict();
  }
  for (auto& [name, v] : args.named) d->set(value::string(std::string(name)), v);
  return value::dict(std::move(d));
}

value fn_raise_exception(interpreter&, arguments& args) {
  std::string message = args.positional.empty() ? std::string() : to_str(args.positional.front());
  throw template_error(errc::invalid_argument, std::move(message), template_error::no_offset, true);
}

value fn_strftime_now(interpreter& in, arguments& args) {
  params p("strftime_now", args, {"format"});
  const std::string format = p.text(0, "format");
  if (format.empty()) return value::string("");
  std::string out(format.size() * 4 + 64, '\0');
  const std::size_t n = std::strftime(out.data(), out.size(), format.c_str(), &in.now());
  if (n == 0) fail("strftime_now: the formatted date is too long");
  out.resize(n);
  return value::string(std::move(out));
}

value fn_unsupported(interpreter&, arguments&) {
  fail_unsupported("cycler(), joiner() and lipsum() are not supported");
}

struct named_global {
  std::string_view name;
  value fn;
};

const std::vector<named_global>& globals() {
  static const std::vector<named_global> table = [] {
    auto make = [](std::string_view name, builtin_function::fn_type fn) {
      return named_global{name, value::object(std::make_shared<builtin_function>(name, fn))};
    };
    return std::vector<named_global>{
        make("range", fn_range),
        make("namespace", fn_namespace),
        make("dict", fn_dict),
        make("raise_exception", fn_raise_exception),
        make("strftime_now", fn_strftime_now),
        make("cycler", fn_unsupported),
        make("joiner", fn_unsupported),
        make("lipsum", fn_unsupported),
    };
  }();
  return table;
}

// --- methods ---

constexpr std::string_view str_methods[] = {
    "capitalize", "casefold",   "center",     "count",        "encode",     "endswith",  "expandtabs",
    "find",       "format",     "format_map", "index",        "isalnum",    "isalpha",   "isascii",
    "isdecimal",  "isdigit",    "isidentifier", "islower",    "isnumeric",  "isprintable", "isspace",
    "istitle",    "isupper",    "join",       "ljust",        "lower",      "lstrip",    "maketrans",
    "partition",  "removeprefix", "removesuffix", "replace",  "rfind",      "rindex",    "rjust",
    "rpartition", "rsplit",     "rstrip",     "split",        "splitlines", "startswith", "strip",
    "swapcase",   "title",      "translate",  "upper",        "zfill"};
constexpr std::string_view list_methods[] = {"append", "clear",  "copy",    "count", "extend", "index",
                                             "insert", "pop",    "remove",  "reverse", "sort"};
constexpr std::string_view dict_methods[] = {"clear", "copy", "fromkeys", "get", "items", "keys",
                                             "pop",   "popitem", "setdefault", "update", "values"};
// Methods that change a list or dict: Hugging Face's immutable sandbox refuses them.
constexpr std::string_view mutating_methods[] = {"append", "clear",   "extend",     "insert", "pop",
                                                 "remove", "reverse", "sort",       "popitem", "setdefault",
                                                 "update"};

template <std::size_t N>
bool listed(const std::string_view (&names)[N], std::string_view name) {
  return std::find(std::begin(names), std::end(names), name) != std::end(names);
}

[[noreturn]] void method_unsupported(const value& self, std::string_view name) {
  fail_unsupported("the " + std::string(type_name(self)) + " method '" + std::string(name) + "' is not supported");
}

value string_method(interpreter&, const std::string& s, const value& self, std::string_view name, arguments& args) {
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    params p(name, args, {"chars"});
    return value::string(strip_chars(s, p.get(0), name != "rstrip", name != "lstrip"));
  }
  if (name == "split" || name == "rsplit") {
    params p(name, args, {"sep", "maxsplit"});
    return value::list(split(s, p.get(0), p.integer(1, -1, "maxsplit"), name == "rsplit"));
  }
  if (name == "splitlines") {
    params p(name, args, {"keepends"});
    std::vector<value> out;
    for (auto& line : split_lines(s, p.flag(0, false))) out.push_back(value::string(std::move(line)));
    return value::list(std::move(out));
  }
  if (name == "startswith" || name == "endswith") {
    params p(name, args, {"prefix"});
    return value::boolean(starts_or_ends(s, p.get(0), name == "startswith"));
  }
  if (name == "upper") return expect_no_args(name, args), value::string(upper(s));
  if (name == "lower" || name == "casefold") return expect_no_args(name, args), value::string(lower(s));
  if (name == "title") return expect_no_args(name, args), value::string(python_title(s));
  if (name == "capitalize") return expect_no_args(name, args), value::string(capitalize(s));
  if (name == "swapcase") {
    expect_no_args(name, args);
    auto cps = utf8::decode(s);
    for (auto& c : cps) c = to_upper(c) != c ? to_upper(c) : to_lower(c);
    return value::string(utf8::encode(cps));
  }
  if (name == "replace") {
    params p(name, args, {"old", "new", "count"});
    return value::string(replace_all(s, p.text(0, "old"), p.text(1, "new"), p.integer(2, -1, "count")));
  }
  if (name == "find" || name == "rfind" || name == "index" || name == "rindex") {
    params p(name, args, {"sub"});
    const auto at = find_text(s, p.text(0, "sub"), name[0] == 'r');
    if (at < 0 && (name == "index" || name == "rindex")) fail("substring not found");
    return value::integer(at);
  }
  if (name == "count") {
    params p(name, args, {"sub"});
    return value::integer(count_text(s, p.text(0, "sub")));
  }
  if (name == "join") {
    params p(name, args, {"iterable"});
    std::string out;
    bool first = true;
    for (const auto& item : iterate(p.get(0))) {
      if (!item.is_string()) fail("sequence item: expected str instance, " + std::string(type_name(item)) + " found");
      if (!first) out += s;
      first = false;
      out += item.as_string();
    }
    return value::string(std::move(out));
  }
  if (name == "format") return value::string(python_format(s, args));
  if (name == "removeprefix" || name == "removesuffix") {
    params p(name, args, {"affix"});
    const std::string affix = p.text(0, "affix");
    if (name == "removeprefix" && s.starts_with(affix)) return value::string(s.substr(affix.size()));
    if (name == "removesuffix" && s.ends_with(affix) && !affix.empty())
      return value::string(s.substr(0, s.size() - affix.size()));
    return self;
  }
  if (name == "partition" || name == "rpartition") {
    params p(name, args, {"sep"});
    const std::string sep = p.text(0, "sep");
    if (sep.empty()) fail("empty separator");
    const auto at = name == "partition" ? s.find(sep) : s.rfind(sep);
    if (at == std::string::npos) {
      if (name == "partition") return value::list({self, value::string(""), value::string("")}, true);
      return value::list({value::string(""), value::string(""), self}, true);
    }
    return value::list({value::string(s.substr(0, at)), value::string(sep), value::string(s.substr(at + sep.size()))},
                       true);
  }
  if (name == "isdigit" || name == "isdecimal" || name == "isnumeric")
    return expect_no_args(name, args), value::boolean(all_chars(s, [](char32_t c) { return c >= '0' && c <= '9'; }));
  if (name == "isalpha") return expect_no_args(name, args), value::boolean(all_chars(s, is_letter));
  if (name == "isalnum")
    return expect_no_args(name, args), value::boolean(all_chars(s, [](char32_t c) { return c != '_' && is_word_char(c); }));
  if (name == "isspace") return expect_no_args(name, args), value::boolean(all_chars(s, is_python_space));
  if (name == "isascii") return expect_no_args(name, args), value::boolean(utf8::is_ascii(s));
  if (name == "islower" || name == "isupper") {
    expect_no_args(name, args);
    bool any_cased = false;
    for (char32_t c : utf8::decode(s)) {
      if (!is_cased_letter(c)) continue;
      any_cased = true;
      if ((name == "islower" ? to_lower(c) : to_upper(c)) != c) return value::boolean(false);
    }
    return value::boolean(any_cased);
  }
  method_unsupported(self, name);
}

value list_method(const value& self, std::string_view name, arguments& args) {
  const auto& items = self.as_list().items;
  if (name == "count") {
    params p(name, args, {"value"});
    return value::integer(std::count_if(items.begin(), items.end(), [&](const value& x) { return equals(x, p.get(0)); }));
  }
  if (name == "index") {
    params p(name, args, {"value"});
    for (std::size_t i = 0; i < items.size(); ++i)
      if (equals(items[i], p.get(0))) return value::integer(static_cast<std::int64_t>(i));
    fail(repr(p.get(0)) + " is not in list");
  }
  if (name == "copy") return expect_no_args(name, args), value::list(items, self.as_list().is_tuple);
  method_unsupported(self, name);
}

value dict_method(const value& self, std::string_view name, arguments& args) {
  const auto& d = self.as_dict();
  if (name == "items" || name == "keys" || name == "values") {
    expect_no_args(name, args);
    std::vector<value> out;
    out.reserve(d.entries.size());
    for (const auto& [k, v] : d.entries) {
      if (name == "items") out.push_back(value::list({k, v}, true));
      else out.push_back(name == "keys" ? k : v);
    }
    return value::list(std::move(out));
  }
  if (name == "get") {
    params p(name, args, {"key", "default"});
    const value* v = d.find(p.get(0));
    return v ? *v : p.get_or(1, value::none());
  }
  if (name == "copy") return expect_no_args(name, args), value::dict(std::make_shared<dict_data>(d));
  method_unsupported(self, name);
}

class bound_method_object : public object {
 public:
  bound_method_object(value self, std::string name) : self_(std::move(self)), name_(std::move(name)) {}
  std::string_view type_name() const override { return "builtin_function_or_method"; }
  std::string repr() const override {
    return "<built-in method " + name_ + " of " + std::string(jinja::type_name(self_)) + " object>";
  }
  bool is_callable() const override { return true; }
  value call(interpreter& in, arguments& args) override { return call_method(in, self_, name_, args); }

 private:
  value self_;
  std::string name_;
};

}  // namespace

filter_fn find_filter(std::string_view name) {
  for (const auto& f : filters)
    if (f.name == name) return f.fn;
  return nullptr;
}

test_fn find_test(std::string_view name) {
  for (const auto& t : tests)
    if (t.name == name) return t.fn;
  return nullptr;
}

bool is_jinja_filter(std::string_view name) {
  return find_filter(name) || listed(jinja_filters_not_implemented, name);
}

bool is_jinja_test(std::string_view name) { return find_test(name) || listed(jinja_tests_not_implemented, name); }

const value* find_global(std::string_view name) {
  for (const auto& g : globals())
    if (g.name == name) return &g.fn;
  return nullptr;
}

bool has_method(const value& self, std::string_view name) {
  if (self.is_string()) return listed(str_methods, name);
  if (self.is_list()) return listed(list_methods, name);
  if (self.is_dict()) return listed(dict_methods, name);
  return false;
}

value call_method(interpreter& in, const value& self, std::string_view name, arguments& args) {
  if (!self.is_string() && listed(mutating_methods, name))
    fail("access to attribute '" + std::string(name) + "' of '" + std::string(type_name(self)) +
         "' object is unsafe.");
  if (self.is_string()) return string_method(in, self.as_string(), self, name, args);
  if (self.is_list()) return list_method(self, name, args);
  return dict_method(self, name, args);
}

value bound_method(const value& self, std::string_view name) {
  return value::object(std::make_shared<bound_method_object>(self, std::string(name)));
}

}  // namespace chatai::engine::jinja
