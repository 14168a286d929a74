// The values chat templates compute with, and the Python semantics Jinja2 gives them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include <rapidjson/document.h>

#include "chatai/core/status.hpp"

namespace chatai::engine::jinja {

struct expr;
class interpreter;
struct arguments;

// A failure while parsing or rendering. `offset` is the byte in the template where it arose;
// no_offset until an enclosing expression or statement fills it in. Messages from
// raise_exception() travel unchanged (`verbatim`).
class template_error : public std::runtime_error {
 public:
  static constexpr std::size_t no_offset = static_cast<std::size_t>(-1);

  template_error(errc code, std::string message, std::size_t offset = no_offset, bool verbatim = false)
      : std::runtime_error(std::move(message)), code_(code), offset_(offset), verbatim_(verbatim) {}

  errc code() const noexcept { return code_; }
  std::size_t offset() const noexcept { return offset_; }
  bool verbatim() const noexcept { return verbatim_; }
  void set_offset(std::size_t offset) noexcept { offset_ = offset; }

 private:
  errc code_;
  std::size_t offset_;
  bool verbatim_;
};

// A runtime failure of the template (a type error, a missing variable used as an object).
[[noreturn]] void fail(std::string message);
// A construct chatai does not implement.
[[noreturn]] void fail_unsupported(std::string message);

// The largest string or list a template may build, and the most statements and loop
// iterations one render may run: real chat templates stay far below both, and a hostile one
// fails (resource_exhausted) instead of taking the process's memory or time.
inline constexpr std::size_t max_value_size = std::size_t{64} << 20;
inline constexpr std::size_t max_render_steps = 10'000'000;
// Fails when a string or list of `size` bytes or items would exceed max_value_size.
void check_size(std::size_t size);

class value;

// Lists and tuples share one representation; `is_tuple` only changes how they print.
struct list_data {
  std::vector<value> items;
  bool is_tuple = false;
};

// A dict keeps insertion order, as Python's does. Lookups are linear: template dicts are small.
struct dict_data {
  std::vector<std::pair<value, value>> entries;

  const value* find(const value& key) const;
  const value* find(std::string_view key) const;
  void set(value key, value item);
};

// Namespaces, loops and callables: values with behaviour of their own.
// Thread safety: owned by one render; never shared between threads.
class object {
 public:
  virtual ~object() = default;
  // Python's name of the type, for error messages ("namespace", "macro").
  virtual std::string_view type_name() const = 0;
  virtual std::string repr() const = 0;
  virtual bool is_callable() const { return false; }
  // The attribute `name`, or an undefined value.
  virtual value attribute(std::string_view name) const;
  virtual value call(interpreter& in, arguments& args);
  // Drops the values this object refers to, ending reference cycles when a render finishes.
  virtual void release() {}
};

// A template value: Jinja2's Undefined, None, bool, int, float, str, list/tuple, dict, or an
// object. Lists, dicts and objects are shared by reference, as in Python.
// Thread safety: a value type over shared data; use within one render.
class value {
 public:
  enum class kind : std::uint8_t { undefined, none, boolean, integer, floating, string, list, dict, object };

  // An undefined value; `origin` is the expression that produced it, for error messages.
  value() = default;
  static value undefined(const expr* origin) { value v; v.data_ = undefined_marker{origin}; return v; }
  static value none() { value v; v.data_ = none_marker{}; return v; }
  static value boolean(bool b) { value v; v.data_ = b; return v; }
  static value integer(std::int64_t i) { value v; v.data_ = i; return v; }
  static value floating(double d) { value v; v.data_ = d; return v; }
  static value string(std::string s) { value v; v.data_ = std::move(s); return v; }
  static value list(std::vector<value> items = {}, bool is_tuple = false);
  static value dict(std::shared_ptr<dict_data> d) { value v; v.data_ = std::move(d); return v; }
  static value object(std::shared_ptr<jinja::object> o) { value v; v.data_ = std::move(o); return v; }
  // A deep conversion of JSON (objects keep their key order).
  static value from_json(const rapidjson::Value& json);

  kind type() const noexcept { return static_cast<kind>(data_.index()); }
  bool is_undefined() const noexcept { return type() == kind::undefined; }
  bool is_none() const noexcept { return type() == kind::none; }
  bool is_bool() const noexcept { return type() == kind::boolean; }
  bool is_int() const noexcept { return type() == kind::integer; }
  bool is_float() const noexcept { return type() == kind::floating; }
  // int, float or bool, as Python's numbers.Number counts them.
  bool is_number() const noexcept { return is_int() || is_float() || is_bool(); }
  bool is_string() const noexcept { return type() == kind::string; }
  bool is_list() const noexcept { return type() == kind::list; }
  bool is_dict() const noexcept { return type() == kind::dict; }
  bool is_object() const noexcept { return type() == kind::object; }
  bool is_callable() const { return is_object() && as_object().is_callable(); }

  bool as_bool() const { return std::get<bool>(data_); }
  std::int64_t as_int() const { return std::get<std::int64_t>(data_); }
  double as_float() const { return std::get<double>(data_); }
  const std::string& as_string() const { return std::get<std::string>(data_); }
  list_data& as_list() const { return *std::get<std::shared_ptr<list_data>>(data_); }
  dict_data& as_dict() const { return *std::get<std::shared_ptr<dict_data>>(data_); }
  jinja::object& as_object() const { return *std::get<std::shared_ptr<jinja::object>>(data_); }
  const std::shared_ptr<jinja::object>& object_ptr() const { return std::get<std::shared_ptr<jinja::object>>(data_); }
  const expr* undefined_origin() const { return std::get<undefined_marker>(data_).origin; }

  // An int or bool as an integer; a float as a double.
  double to_double() const;
  std::int64_t to_integer() const { return is_bool() ? as_bool() : as_int(); }
  // int or bool (Python's bool is an int).
  bool is_integral() const noexcept { return is_int() || is_bool(); }

 private:
  struct undefined_marker {
    const expr* origin;  // value-initialized to null by the variant
  };
  struct none_marker {};
  std::variant<undefined_marker, none_marker, bool, std::int64_t, double, std::string, std::shared_ptr<list_data>,
               std::shared_ptr<dict_data>, std::shared_ptr<jinja::object>>
      data_;
};

// Python's type name of a value ("str", "dict", "NoneType").
std::string_view type_name(const value& v);
// Python's truth value (Undefined is false).
bool truthy(const value& v);
// str(v) as Jinja2 prints it: Undefined is empty, None is "None", containers print their repr.
std::string to_str(const value& v);
void append_str(std::string& out, const value& v);
// repr(v), as Python writes it.
std::string repr(const value& v);
// Python's ==.
bool equals(const value& a, const value& b);
// Python's <, ==, > for numbers, strings and sequences: negative, zero or positive. Other
// pairs fail as Python does ("'<' not supported between ...").
int compare(const value& a, const value& b, std::string_view op);
// The elements iteration yields: a list's items, a dict's keys, a string's characters; none
// for Undefined. Other values fail ("'int' object is not iterable").
std::vector<value> iterate(const value& v);
// len(v); Undefined has length 0.
std::int64_t length(const value& v);
// json.dumps(v, ensure_ascii=False, indent=..., separators=..., sort_keys=...) as Hugging
// Face's tojson filter calls it; no `indent` writes everything on one line.
struct json_format {
  std::optional<std::string> indent;
  std::string item_separator = ", ";
  std::string key_separator = ": ";
  bool sort_keys = false;
  bool ensure_ascii = false;
};
std::string to_json(const value& v, const json_format& format);
// Python's repr of a float ("1.0", "1e-05", "0.30000000000000004").
std::string float_repr(double d);

// UTF-8 helpers for Python's code-point view of strings.
namespace utf8 {
// The code points of `s` (invalid bytes decode as themselves).
std::u32string decode(std::string_view s);
std::string encode(std::u32string_view s);
// The code point at byte `i` and its length in bytes (an invalid byte is one code point).
char32_t decode_at(std::string_view s, std::size_t i, std::size_t& size);
// The start of the code point that ends just before byte `i` (i > 0).
std::size_t previous(std::string_view s, std::size_t i);
void append(std::string& out, char32_t c);
// Number of code points.
std::size_t length(std::string_view s);
bool is_ascii(std::string_view s);
}  // namespace utf8

// Python's str.isspace() for one code point.
bool is_python_space(char32_t c);
// Python's s.strip() / lstrip() / rstrip() without arguments.
std::string_view strip_space(std::string_view s, bool left, bool right);
// Python's str.upper(), str.lower() (simple case mappings of the common scripts).
char32_t to_upper(char32_t c);
char32_t to_lower(char32_t c);
bool is_cased_letter(char32_t c);
std::string upper(std::string_view s);
std::string lower(std::string_view s);

}  // namespace chatai::engine::jinja
