// The tree-walking interpreter that renders a parsed chat template.
#pragma once

#include <ctime>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "template_ast.hpp"
#include "template_builtins.hpp"

namespace chatai::engine::jinja {

// The variables of one scope; lookups continue in `parent`.
struct frame {
  std::vector<std::pair<std::string_view, value>> vars;
  std::shared_ptr<frame> parent;

  value* find(std::string_view name);
  void set(std::string_view name, value v);
};

// namespace(): the one object whose attributes templates may assign.
// Thread safety: owned by one render.
class namespace_object : public object {
 public:
  std::string_view type_name() const override { return "Namespace"; }
  std::string repr() const override;
  value attribute(std::string_view name) const override;
  void set(std::string_view name, value v);
  void release() override { attributes_.entries.clear(); }

 private:
  dict_data attributes_;
};

// A macro (or the body of a call block) with the scope it was defined in.
// Thread safety: owned by one render.
class macro_object : public object {
 public:
  macro_object(const macro_definition& definition, std::shared_ptr<frame> closure)
      : definition_(definition), closure_(std::move(closure)) {}
  std::string_view type_name() const override { return "Macro"; }
  std::string repr() const override { return "<Macro '" + std::string(definition_.name) + "'>"; }
  bool is_callable() const override { return true; }
  value attribute(std::string_view name) const override;
  value call(interpreter& in, arguments& args) override;
  void release() override { closure_.reset(); }

 private:
  const macro_definition& definition_;
  std::shared_ptr<frame> closure_;
};

// Renders one program against one context. Errors are thrown as template_error.
// Thread safety: not thread-safe; one interpreter per render.
class interpreter {
 public:
  interpreter(const program& prog, const dict_data& context, const std::tm& now)
      : prog_(prog), context_(context), now_(now) {}
  ~interpreter();
  interpreter(const interpreter&) = delete;
  interpreter& operator=(const interpreter&) = delete;

  std::string render();

  value eval(const expr& e);
  // callee(args): macros, builtin functions and bound methods.
  value call(const value& callee, arguments& args);
  // Jinja2's getattr (obj.name) and getitem (obj[key]): missing things are undefined.
  value get_attribute(const value& obj, std::string_view name, const expr* origin);
  value get_item(const value& obj, const value& key, const expr* origin);
  // Fails naming the expression an undefined value came from.
  [[noreturn]] void undefined_error(const value& v) const;

  value call_macro(const macro_definition& def, const std::shared_ptr<frame>& closure, arguments& args);
  // Wraps an object that can hold other values (a namespace, a macro and its scope); the
  // interpreter releases them all when it is destroyed, so that cycles among them are freed.
  value make_object(std::shared_ptr<object> o);
  const std::tm& now() const noexcept { return now_; }

 private:
  enum class flow { normal, break_loop, continue_loop };

  value eval_node(const expr& e);
  value eval_call(const call_expr& c);
  value eval_binary(const binary_expr& b);
  value eval_compare(const compare_expr& c);
  value eval_slice(const slice_expr& s);
  void eval_args(const std::vector<expr_ptr>& args, const std::vector<keyword_arg>& kwargs, arguments& out);
  value apply_filter(const filter_expr& f, value operand);

  // Counts a statement or loop iteration against max_render_steps.
  void count_step();
  flow exec(const body& b, std::string& out);
  flow exec(const stmt& s, std::string& out);
  flow exec_node(const stmt& s, std::string& out);
  flow exec_for(const for_stmt& s, std::string& out);
  // Renders `b` in a new scope below the current one.
  std::string render_scoped(const body& b);

  value lookup(const name_expr& n);
  void assign(const assign_target& target, value v);
  void bind_targets(frame& f, const std::vector<std::string_view>& targets, bool unpack, const value& item);

  const program& prog_;
  const dict_data& context_;
  std::tm now_;
  std::shared_ptr<frame> frame_;
  std::vector<std::shared_ptr<object>> owned_;
  int call_depth_ = 0;
  int eval_depth_ = 0;
  std::size_t steps_ = 0;
};

}  // namespace chatai::engine::jinja
