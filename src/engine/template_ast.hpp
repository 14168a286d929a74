// The syntax tree of a parsed chat template: expressions, statements and the whole program.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "template_value.hpp"

namespace chatai::engine::jinja {

// Builtins are resolved while parsing, so an unknown filter or test fails before rendering.
using filter_fn = value (*)(interpreter& in, const value& operand, arguments& args);
using test_fn = bool (*)(interpreter& in, const value& operand, arguments& args);

// Where a node's source text begins and ends (byte offsets into program::source).
struct span {
  std::size_t begin = 0;
  std::size_t end = 0;
};

enum class expr_kind : std::uint8_t {
  literal,
  name,
  list,
  dict,
  attribute,
  subscript,
  slice,
  call,
  filter,
  test,
  unary,
  binary,
  compare,
  conditional,
};

struct expr {
  explicit expr(expr_kind k) : kind(k) {}
  virtual ~expr() = default;
  expr_kind kind;
  span where;
};
using expr_ptr = std::unique_ptr<expr>;

struct keyword_arg {
  std::string_view name;
  expr_ptr value;
};

struct literal_expr : expr {
  literal_expr() : expr(expr_kind::literal) {}
  jinja::value value;
};

struct name_expr : expr {
  name_expr() : expr(expr_kind::name) {}
  std::string_view name;
};

// A list or tuple display.
struct list_expr : expr {
  list_expr() : expr(expr_kind::list) {}
  std::vector<expr_ptr> items;
  bool is_tuple = false;
};

struct dict_expr : expr {
  dict_expr() : expr(expr_kind::dict) {}
  std::vector<std::pair<expr_ptr, expr_ptr>> items;
};

// obj.name
struct attribute_expr : expr {
  attribute_expr() : expr(expr_kind::attribute) {}
  expr_ptr object;
  std::string_view name;
};

// obj[index]
struct subscript_expr : expr {
  subscript_expr() : expr(expr_kind::subscript) {}
  expr_ptr object;
  expr_ptr index;
};

// obj[start:stop:step]; absent parts are null.
struct slice_expr : expr {
  slice_expr() : expr(expr_kind::slice) {}
  expr_ptr object;
  expr_ptr start, stop, step;
};

struct call_expr : expr {
  call_expr() : expr(expr_kind::call) {}
  expr_ptr callee;
  std::vector<expr_ptr> args;
  std::vector<keyword_arg> kwargs;
};

// operand | name(args)
struct filter_expr : expr {
  filter_expr() : expr(expr_kind::filter) {}
  expr_ptr operand;
  std::string_view name;
  filter_fn fn = nullptr;
  std::vector<expr_ptr> args;
  std::vector<keyword_arg> kwargs;
};

// operand is [not] name(args)
struct test_expr : expr {
  test_expr() : expr(expr_kind::test) {}
  expr_ptr operand;
  std::string_view name;
  test_fn fn = nullptr;
  std::vector<expr_ptr> args;
  std::vector<keyword_arg> kwargs;
  bool negated = false;
};

enum class unary_op : std::uint8_t { negate, plus, logical_not };

struct unary_expr : expr {
  unary_expr() : expr(expr_kind::unary) {}
  unary_op op = unary_op::negate;
  expr_ptr operand;
};

enum class binary_op : std::uint8_t { add, sub, mul, div, floordiv, mod, pow, concat, logical_and, logical_or };

struct binary_expr : expr {
  binary_expr() : expr(expr_kind::binary) {}
  binary_op op = binary_op::add;
  expr_ptr left, right;
};

enum class compare_op : std::uint8_t { eq, ne, lt, le, gt, ge, in, not_in };

// A chain: first op1 x1 op2 x2 ... (a < b < c holds when each link does).
struct compare_expr : expr {
  compare_expr() : expr(expr_kind::compare) {}
  expr_ptr first;
  std::vector<std::pair<compare_op, expr_ptr>> rest;
};

// then if condition else otherwise; otherwise may be null (then the result is undefined).
struct conditional_expr : expr {
  conditional_expr() : expr(expr_kind::conditional) {}
  expr_ptr condition, then, otherwise;
};

enum class stmt_kind : std::uint8_t {
  text,
  output,
  if_chain,
  for_loop,
  set,
  set_block,
  macro,
  call_block,
  filter_block,
  scope,
  loop_control,
};

struct stmt {
  explicit stmt(stmt_kind k) : kind(k) {}
  virtual ~stmt() = default;
  stmt_kind kind;
  span where;
};
using stmt_ptr = std::unique_ptr<stmt>;
using body = std::vector<stmt_ptr>;

struct text_stmt : stmt {
  text_stmt() : stmt(stmt_kind::text) {}
  std::string text;
};

// {{ expression }}
struct output_stmt : stmt {
  output_stmt() : stmt(stmt_kind::output) {}
  expr_ptr value;
};

// if / elif ... / else: the first branch whose condition holds runs.
struct if_stmt : stmt {
  if_stmt() : stmt(stmt_kind::if_chain) {}
  std::vector<std::pair<expr_ptr, body>> branches;
  body otherwise;
};

struct for_stmt : stmt {
  for_stmt() : stmt(stmt_kind::for_loop) {}
  std::vector<std::string_view> targets;  // more than one: each item is unpacked
  bool unpack = false;
  expr_ptr iterable;
  expr_ptr filter;  // the "if" clause, or null
  body loop_body;
  body otherwise;
};

// The left side of a set: names (a tuple when several) or namespace.attribute.
struct assign_target {
  std::vector<std::string_view> names;
  bool unpack = false;
  std::string_view attribute;  // non-empty: names[0] is a namespace
};

struct set_stmt : stmt {
  set_stmt() : stmt(stmt_kind::set) {}
  assign_target target;
  expr_ptr value;
};

// {% set x | filters %}body{% endset %}; each filter's operand is null.
struct set_block_stmt : stmt {
  set_block_stmt() : stmt(stmt_kind::set_block) {}
  assign_target target;
  std::vector<std::unique_ptr<filter_expr>> filters;
  body content;
};

struct macro_param {
  std::string_view name;
  expr_ptr default_value;  // null when required
};

struct macro_definition {
  std::string_view name;
  std::vector<macro_param> params;
  body content;
  bool takes_varargs = false;  // the body reads `varargs`
  bool takes_kwargs = false;   // the body reads `kwargs`
  bool takes_caller = false;   // the body reads `caller`
};

struct macro_stmt : stmt {
  macro_stmt() : stmt(stmt_kind::macro) {}
  macro_definition definition;
};

// {% call(params) callee(args) %}body{% endcall %}: body becomes the callee's `caller`.
struct call_block_stmt : stmt {
  call_block_stmt() : stmt(stmt_kind::call_block) {}
  std::unique_ptr<call_expr> call;
  macro_definition caller;
};

struct filter_block_stmt : stmt {
  filter_block_stmt() : stmt(stmt_kind::filter_block) {}
  std::vector<std::unique_ptr<filter_expr>> filters;
  body content;
};

// A body in a scope of its own: {% with %} (with its assignments) and {% generation %}.
struct scope_stmt : stmt {
  scope_stmt() : stmt(stmt_kind::scope) {}
  std::vector<std::pair<std::string_view, expr_ptr>> assignments;
  body content;
};

// {% break %} or {% continue %}
struct loop_control_stmt : stmt {
  loop_control_stmt() : stmt(stmt_kind::loop_control) {}
  bool is_break = false;
};

// A parsed template. Names in the tree point into `source`, which never moves.
struct program {
  std::string source;
  body root;
};

// 1-based line and column (in code points) of a byte offset of `source`.
std::pair<std::size_t, std::size_t> line_column(std::string_view source, std::size_t offset);

}  // namespace chatai::engine::jinja
