// The builtins of the template language: filters, tests, global functions and the methods of
// str, list and dict that chat templates call.
#pragma once

#include <string_view>
#include <utility>
#include <vector>

#include "template_ast.hpp"

namespace chatai::engine::jinja {

// Arguments of a call, evaluated: positional first, then keyword.
struct arguments {
  std::vector<value> positional;
  std::vector<std::pair<std::string_view, value>> named;
};

// The filter or test of that name, or nullptr.
filter_fn find_filter(std::string_view name);
test_fn find_test(std::string_view name);
// Whether Jinja2 has a filter or test of that name (implemented here or not).
bool is_jinja_filter(std::string_view name);
bool is_jinja_test(std::string_view name);

// The global function of that name (range, namespace, raise_exception, strftime_now, dict), or
// nullptr. The values live as long as the process.
const value* find_global(std::string_view name);

// Whether `name` is a method of self's type (str, list or dict) in Python. Methods chatai does
// not implement count too, so that using them fails loudly instead of being undefined.
bool has_method(const value& self, std::string_view name);
// Calls self.name(args); has_method(self, name) must hold.
value call_method(interpreter& in, const value& self, std::string_view name, arguments& args);
// A callable value for self.name, for when a method is read without being called.
value bound_method(const value& self, std::string_view name);

}  // namespace chatai::engine::jinja
