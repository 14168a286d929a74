// The interpreter: scopes, statements, and expressions with Python's operator semantics.
#include "template_eval.hpp"

#include <cmath>
#include <limits>
#include <utility>

#include "template_strings.hpp"

namespace chatai::engine::jinja {

namespace {

// Macros calling macros, and expressions nested (a + b + c ... is a nest too), deeper than
// this fail instead of exhausting the stack.
constexpr int max_call_depth = 200;
constexpr int max_eval_depth = 1000;

// The loop variable of a for loop; the interpreter advances it in place.
class loop_object : public object, public std::enable_shared_from_this<loop_object> {
 public:
  explicit loop_object(std::vector<value> items) : items_(std::move(items)) {}

  const std::vector<value>& items() const noexcept { return items_; }

  std::string_view type_name() const override { return "LoopContext"; }
  std::string repr() const override {
    return "<LoopContext " + std::to_string(index_ + 1) + "/" + std::to_string(items_.size()) + ">";
  }
  value attribute(std::string_view name) const override;
  void advance_to(std::size_t index) { index_ = index; }

 private:
  class cycler : public object {
   public:
    explicit cycler(std::shared_ptr<const loop_object> loop) : loop_(std::move(loop)) {}
    std::string_view type_name() const override { return "method"; }
    std::string repr() const override { return "<bound method LoopContext.cycle>"; }
    bool is_callable() const override { return true; }
    value call(interpreter&, arguments& args) override {
      if (args.positional.empty()) fail("no items for cycling given");
      return args.positional[loop_->index_ % args.positional.size()];
    }

   private:
    std::shared_ptr<const loop_object> loop_;
  };

  std::vector<value> items_;
  std::size_t index_ = 0;
};

value loop_object::attribute(std::string_view name) const {
  const auto n = static_cast<std::int64_t>(items_.size());
  const auto i = static_cast<std::int64_t>(index_);
  if (name == "index") return value::integer(i + 1);
  if (name == "index0") return value::integer(i);
  if (name == "revindex") return value::integer(n - i);
  if (name == "revindex0") return value::integer(n - i - 1);
  if (name == "first") return value::boolean(i == 0);
  if (name == "last") return value::boolean(i == n - 1);
  if (name == "length") return value::integer(n);
  if (name == "depth") return value::integer(1);  // only recursive loops go deeper
  if (name == "depth0") return value::integer(0);
  if (name == "previtem") return i > 0 ? items_[index_ - 1] : value::undefined(nullptr);
  if (name == "nextitem") return i + 1 < n ? items_[index_ + 1] : value::undefined(nullptr);
  if (name == "cycle") return value::object(std::make_shared<cycler>(shared_from_this()));
  if (name == "changed") fail_unsupported("loop.changed() is not supported");
  return value::undefined(nullptr);
}

// Makes `next` the current frame for as long as it lives.
class frame_swap {
 public:
  frame_swap(std::shared_ptr<frame>& current, std::shared_ptr<frame> next)
      : current_(current), saved_(std::exchange(current, std::move(next))) {}
  ~frame_swap() { current_ = std::move(saved_); }
  frame_swap(const frame_swap&) = delete;
  frame_swap& operator=(const frame_swap&) = delete;

 private:
  std::shared_ptr<frame>& current_;
  std::shared_ptr<frame> saved_;
};

// Counts one level of recursion for as long as it lives.
struct depth_guard {
  int& depth;
  explicit depth_guard(int& d) : depth(++d) {}
  ~depth_guard() { --depth; }
  depth_guard(const depth_guard&) = delete;
  depth_guard& operator=(const depth_guard&) = delete;
};

std::shared_ptr<frame> child_of(std::shared_ptr<frame> parent) {
  auto f = std::make_shared<frame>();
  f->parent = std::move(parent);
  return f;
}

// The source text of an expression, shortened for messages.
std::string excerpt(std::string_view source, const span& where) {
  auto text = source.substr(where.begin, where.end - where.begin);
  if (text.size() > 60) return std::string(text.substr(0, 57)) + "...";
  return std::string(text);
}

// Integer arithmetic that fails on overflow (Python's ints do not overflow; ours are 64-bit).
template <class Op>
std::int64_t checked(Op op, std::int64_t a, std::int64_t b) {
  std::int64_t result = 0;
  if (op(a, b, &result)) fail("integer overflow");
  return result;
}
constexpr auto add_op = [](std::int64_t a, std::int64_t b, std::int64_t* r) { return __builtin_add_overflow(a, b, r); };
constexpr auto sub_op = [](std::int64_t a, std::int64_t b, std::int64_t* r) { return __builtin_sub_overflow(a, b, r); };
constexpr auto mul_op = [](std::int64_t a, std::int64_t b, std::int64_t* r) { return __builtin_mul_overflow(a, b, r); };

double floor_mod(double x, double y) {
  double m = std::fmod(x, y);
  if (m != 0 && ((m < 0) != (y < 0))) m += y;
  return m;
}

value repeat(const value& seq, std::int64_t times) {
  const std::size_t unit = seq.is_string() ? seq.as_string().size() : seq.as_list().items.size();
  if (times > 0 && unit > 0) check_size(static_cast<std::size_t>(std::min<std::int64_t>(times, max_value_size + 1)) * unit);
  if (seq.is_string()) {
    std::string out;
    for (std::int64_t i = 0; i < times; ++i) out += seq.as_string();
    return value::string(std::move(out));
  }
  std::vector<value> out;
  for (std::int64_t i = 0; i < times; ++i)
    out.insert(out.end(), seq.as_list().items.begin(), seq.as_list().items.end());
  return value::list(std::move(out), seq.as_list().is_tuple);
}

[[noreturn]] void operand_error(std::string_view op, const value& l, const value& r) {
  fail("unsupported operand type(s) for " + std::string(op) + ": '" + std::string(type_name(l)) + "' and '" +
       std::string(type_name(r)) + "'");
}

value arithmetic(binary_op op, std::string_view symbol, const value& l, const value& r) {
  if (l.is_number() && r.is_number()) {
    const bool integral = l.is_integral() && r.is_integral();
    if (integral) {
      const auto a = l.to_integer(), b = r.to_integer();
      switch (op) {
        case binary_op::add: return value::integer(checked(add_op, a, b));
        case binary_op::sub: return value::integer(checked(sub_op, a, b));
        case binary_op::mul: return value::integer(checked(mul_op, a, b));
        case binary_op::div:
          if (b == 0) fail("division by zero");
          return value::floating(static_cast<double>(a) / static_cast<double>(b));
        case binary_op::floordiv:
        case binary_op::mod: {
          if (b == 0) fail("integer division or modulo by zero");
          if (a == std::numeric_limits<std::int64_t>::min() && b == -1) fail("integer overflow");
          std::int64_t q = a / b, m = a % b;
          if (m != 0 && ((m < 0) != (b < 0))) {
            --q;
            m += b;
          }
          return value::integer(op == binary_op::floordiv ? q : m);
        }
        case binary_op::pow: {
          if (b < 0) return value::floating(std::pow(static_cast<double>(a), static_cast<double>(b)));
          std::int64_t result = 1, base = a;
          for (std::int64_t e = b; e > 0; e >>= 1) {
            if (e & 1) result = checked(mul_op, result, base);
            if (e > 1) base = checked(mul_op, base, base);
          }
          return value::integer(result);
        }
        default: break;
      }
    }
    const double a = l.to_double(), b = r.to_double();
    switch (op) {
      case binary_op::add: return value::floating(a + b);
      case binary_op::sub: return value::floating(a - b);
      case binary_op::mul: return value::floating(a * b);
      case binary_op::div:
        if (b == 0) fail("float division by zero");
        return value::floating(a / b);
      case binary_op::floordiv:
        if (b == 0) fail("float floor division by zero");
        return value::floating(std::floor(a / b));
      case binary_op::mod:
        if (b == 0) fail("float modulo");
        return value::floating(floor_mod(a, b));
      case binary_op::pow: return value::floating(std::pow(a, b));
      default: break;
    }
  }
  if (op == binary_op::add) {
    if (l.is_string() && r.is_string()) {
      check_size(l.as_string().size() + r.as_string().size());
      return value::string(l.as_string() + r.as_string());
    }
    if (l.is_list() && r.is_list() && l.as_list().is_tuple == r.as_list().is_tuple) {
      check_size(l.as_list().items.size() + r.as_list().items.size());
      auto items = l.as_list().items;
      items.insert(items.end(), r.as_list().items.begin(), r.as_list().items.end());
      return value::list(std::move(items), l.as_list().is_tuple);
    }
    if (l.is_string() && !r.is_undefined())
      fail("can only concatenate str (not \"" + std::string(type_name(r)) + "\") to str");
  }
  if (op == binary_op::mul) {
    if ((l.is_string() || l.is_list()) && r.is_integral()) return repeat(l, r.to_integer());
    if (l.is_integral() && (r.is_string() || r.is_list())) return repeat(r, l.to_integer());
  }
  if (op == binary_op::mod && l.is_string()) {
    arguments args;
    if (r.is_list() && r.as_list().is_tuple) {
      args.positional = r.as_list().items;
    } else if (r.is_dict()) {
      for (const auto& [k, v] : r.as_dict().entries)
        if (k.is_string()) args.named.emplace_back(k.as_string(), v);
      args.positional.push_back(r);
    } else {
      args.positional.push_back(r);
    }
    return value::string(percent_format(l.as_string(), args, r.is_dict()));
  }
  operand_error(symbol, l, r);
}

bool contains(const value& container, const value& item) {
  switch (container.type()) {
    case value::kind::undefined: return false;
    case value::kind::string:
      if (!item.is_string())
        fail("'in <string>' requires string as left operand, not " + std::string(type_name(item)));
      return container.as_string().find(item.as_string()) != std::string::npos;
    case value::kind::list:
      for (const auto& x : container.as_list().items)
        if (equals(x, item)) return true;
      return false;
    case value::kind::dict: return container.as_dict().find(item) != nullptr;
    default: fail("argument of type '" + std::string(type_name(container)) + "' is not iterable");
  }
}

// Python's slice.indices(): the normalized start, stop and step for a sequence of `length`.
void slice_indices(std::int64_t length, const value& start_v, const value& stop_v, const value& step_v,
                   std::int64_t& start, std::int64_t& stop, std::int64_t& step) {
  auto as_index = [](const value& v, const char* what) -> std::int64_t {
    if (!v.is_integral()) fail(std::string("slice ") + what + " must be an integer or None");
    return v.to_integer();
  };
  const bool no_step = step_v.is_none() || step_v.is_undefined();
  step = no_step ? 1 : as_index(step_v, "step");
  if (step == 0) fail("slice step cannot be zero");
  auto adjust = [&](const value& v, bool is_start) -> std::int64_t {
    if (v.is_none() || v.is_undefined()) {
      if (step > 0) return is_start ? 0 : length;
      return is_start ? length - 1 : -1;
    }
    std::int64_t i = as_index(v, is_start ? "start" : "stop");
    if (i < 0) {
      i += length;
      if (i < 0) i = step < 0 ? -1 : 0;
    } else if (i >= length) {
      i = step < 0 ? length - 1 : length;
    }
    return i;
  };
  start = adjust(start_v, true);
  stop = adjust(stop_v, false);
}

}  // namespace

value* frame::find(std::string_view name) {
  for (auto& [k, v] : vars)
    if (k == name) return &v;
  return nullptr;
}

void frame::set(std::string_view name, value v) {
  if (value* existing = find(name)) {
    *existing = std::move(v);
    return;
  }
  vars.emplace_back(name, std::move(v));
}

std::string namespace_object::repr() const {
  return "<Namespace " + jinja::repr(value::dict(std::make_shared<dict_data>(attributes_))) + ">";
}

value namespace_object::attribute(std::string_view name) const {
  const value* v = attributes_.find(name);
  return v ? *v : value::undefined(nullptr);
}

void namespace_object::set(std::string_view name, value v) {
  attributes_.set(value::string(std::string(name)), std::move(v));
}

value macro_object::attribute(std::string_view name) const {
  if (name == "name") return value::string(std::string(definition_.name));
  return value::undefined(nullptr);
}

value macro_object::call(interpreter& in, arguments& args) { return in.call_macro(definition_, closure_, args); }

interpreter::~interpreter() {
  for (auto& o : owned_) o->release();
}

value interpreter::make_object(std::shared_ptr<object> o) {
  owned_.push_back(o);
  return value::object(std::move(o));
}

std::string interpreter::render() {
  frame_ = std::make_shared<frame>();
  std::string out;
  out.reserve(prog_.source.size() * 2);
  exec(prog_.root, out);
  return out;
}

void interpreter::undefined_error(const value& v) const {
  if (const expr* origin = v.undefined_origin()) fail("'" + excerpt(prog_.source, origin->where) + "' is undefined");
  fail("a value is undefined");
}

value interpreter::lookup(const name_expr& n) {
  for (frame* f = frame_.get(); f; f = f->parent.get())
    if (value* v = f->find(n.name)) return *v;
  if (const value* v = context_.find(n.name)) return *v;
  if (const value* v = find_global(n.name)) return *v;
  return value::undefined(&n);
}

value interpreter::eval(const expr& e) {
  if (eval_depth_ >= max_eval_depth) fail("the expression is nested too deeply");
  const depth_guard guard(eval_depth_);
  try {
    return eval_node(e);
  } catch (template_error& err) {
    if (err.offset() == template_error::no_offset && !err.verbatim()) err.set_offset(e.where.begin);
    throw;
  }
}

value interpreter::eval_node(const expr& e) {
  switch (e.kind) {
    case expr_kind::literal: return static_cast<const literal_expr&>(e).value;
    case expr_kind::name: return lookup(static_cast<const name_expr&>(e));
    case expr_kind::list: {
      const auto& l = static_cast<const list_expr&>(e);
      std::vector<value> items;
      items.reserve(l.items.size());
      for (const auto& item : l.items) items.push_back(eval(*item));
      return value::list(std::move(items), l.is_tuple);
    }
    case expr_kind::dict: {
      auto d = std::make_shared<dict_data>();
      for (const auto& [k, v] : static_cast<const dict_expr&>(e).items) {
        value key = eval(*k);
        d->set(std::move(key), eval(*v));
      }
      return value::dict(std::move(d));
    }
    case expr_kind::attribute: {
      const auto& a = static_cast<const attribute_expr&>(e);
      return get_attribute(eval(*a.object), a.name, &e);
    }
    case expr_kind::subscript: {
      const auto& s = static_cast<const subscript_expr&>(e);
      value obj = eval(*s.object);
      return get_item(obj, eval(*s.index), &e);
    }
    case expr_kind::slice: return eval_slice(static_cast<const slice_expr&>(e));
    case expr_kind::call: return eval_call(static_cast<const call_expr&>(e));
    case expr_kind::filter: {
      const auto& f = static_cast<const filter_expr&>(e);
      return apply_filter(f, eval(*f.operand));
    }
    case expr_kind::test: {
      const auto& t = static_cast<const test_expr&>(e);
      value operand = eval(*t.operand);
      arguments args;
      eval_args(t.args, t.kwargs, args);
      return value::boolean(t.fn(*this, operand, args) != t.negated);
    }
    case expr_kind::unary: {
      const auto& u = static_cast<const unary_expr&>(e);
      value v = eval(*u.operand);
      if (u.op == unary_op::logical_not) return value::boolean(!truthy(v));
      if (v.is_undefined()) undefined_error(v);
      if (v.is_float()) return value::floating(u.op == unary_op::negate ? -v.as_float() : v.as_float());
      if (v.is_integral()) {
        if (u.op == unary_op::plus) return value::integer(v.to_integer());
        if (v.to_integer() == std::numeric_limits<std::int64_t>::min()) fail("integer overflow");
        return value::integer(-v.to_integer());
      }
      fail(std::string("bad operand type for unary ") + (u.op == unary_op::negate ? "-" : "+") + ": '" +
           std::string(type_name(v)) + "'");
    }
    case expr_kind::binary: return eval_binary(static_cast<const binary_expr&>(e));
    case expr_kind::compare: return eval_compare(static_cast<const compare_expr&>(e));
    case expr_kind::conditional: {
      const auto& c = static_cast<const conditional_expr&>(e);
      if (truthy(eval(*c.condition))) return eval(*c.then);
      return c.otherwise ? eval(*c.otherwise) : value::undefined(&e);
    }
  }
  fail("unknown expression");
}

void interpreter::eval_args(const std::vector<expr_ptr>& args, const std::vector<keyword_arg>& kwargs,
                            arguments& out) {
  out.positional.reserve(args.size());
  for (const auto& a : args) out.positional.push_back(eval(*a));
  for (const auto& k : kwargs) out.named.emplace_back(k.name, eval(*k.value));
}

value interpreter::apply_filter(const filter_expr& f, value operand) {
  arguments args;
  eval_args(f.args, f.kwargs, args);
  return f.fn(*this, operand, args);
}

value interpreter::eval_call(const call_expr& c) {
  value callee;
  if (c.callee->kind == expr_kind::attribute) {
    const auto& a = static_cast<const attribute_expr&>(*c.callee);
    value obj = eval(*a.object);
    if ((obj.is_string() || obj.is_list() || obj.is_dict()) && has_method(obj, a.name)) {
      arguments args;
      eval_args(c.args, c.kwargs, args);
      return call_method(*this, obj, a.name, args);
    }
    callee = get_attribute(obj, a.name, c.callee.get());
  } else {
    callee = eval(*c.callee);
  }
  arguments args;
  eval_args(c.args, c.kwargs, args);
  return call(callee, args);
}

value interpreter::call(const value& callee, arguments& args) {
  if (callee.is_undefined()) undefined_error(callee);
  if (!callee.is_callable()) fail("'" + std::string(type_name(callee)) + "' object is not callable");
  return callee.as_object().call(*this, args);
}

value interpreter::get_attribute(const value& obj, std::string_view name, const expr* origin) {
  switch (obj.type()) {
    case value::kind::undefined: undefined_error(obj);
    case value::kind::dict: {
      if (has_method(obj, name)) return bound_method(obj, name);
      const value* v = obj.as_dict().find(name);
      return v ? *v : value::undefined(origin);
    }
    case value::kind::string:
    case value::kind::list:
      return has_method(obj, name) ? bound_method(obj, name) : value::undefined(origin);
    case value::kind::object: {
      value v = obj.as_object().attribute(name);
      return v.is_undefined() ? value::undefined(origin) : v;
    }
    default: return value::undefined(origin);
  }
}

value interpreter::get_item(const value& obj, const value& key, const expr* origin) {
  switch (obj.type()) {
    case value::kind::undefined: undefined_error(obj);
    case value::kind::dict: {
      if (const value* v = obj.as_dict().find(key)) return *v;
      break;
    }
    case value::kind::list: {
      if (!key.is_integral()) break;
      const auto& items = obj.as_list().items;
      auto i = key.to_integer();
      if (i < 0) i += static_cast<std::int64_t>(items.size());
      if (i >= 0 && i < static_cast<std::int64_t>(items.size())) return items[static_cast<std::size_t>(i)];
      return value::undefined(origin);
    }
    case value::kind::string: {
      if (!key.is_integral()) break;
      const auto chars = utf8::decode(obj.as_string());
      auto i = key.to_integer();
      if (i < 0) i += static_cast<std::int64_t>(chars.size());
      if (i >= 0 && i < static_cast<std::int64_t>(chars.size())) {
        std::string s;
        utf8::append(s, chars[static_cast<std::size_t>(i)]);
        return value::string(std::move(s));
      }
      return value::undefined(origin);
    }
    default: break;
  }
  if (key.is_string()) {
    if (obj.is_object()) {
      value v = obj.as_object().attribute(key.as_string());
      return v.is_undefined() ? value::undefined(origin) : v;
    }
    if ((obj.is_string() || obj.is_list() || obj.is_dict()) && has_method(obj, key.as_string()))
      return bound_method(obj, key.as_string());
  }
  return value::undefined(origin);
}

value interpreter::eval_slice(const slice_expr& s) {
  value obj = eval(*s.object);
  if (obj.is_undefined()) undefined_error(obj);
  const value start_v = s.start ? eval(*s.start) : value::none();
  const value stop_v = s.stop ? eval(*s.stop) : value::none();
  const value step_v = s.step ? eval(*s.step) : value::none();
  const bool is_string = obj.is_string();
  if (!is_string && !obj.is_list()) fail("'" + std::string(type_name(obj)) + "' object is not subscriptable");
  const bool ascii = is_string && utf8::is_ascii(obj.as_string());
  std::u32string chars;
  if (is_string && !ascii) chars = utf8::decode(obj.as_string());
  const auto length = static_cast<std::int64_t>(!is_string ? obj.as_list().items.size()
                                                : ascii     ? obj.as_string().size()
                                                            : chars.size());
  std::int64_t start, stop, step;
  slice_indices(length, start_v, stop_v, step_v, start, stop, step);
  if (is_string && ascii && step == 1)
    return value::string(start < stop ? obj.as_string().substr(static_cast<std::size_t>(start),
                                                               static_cast<std::size_t>(stop - start))
                                      : std::string());
  std::vector<std::size_t> picked;
  for (std::int64_t i = start; step > 0 ? i < stop : i > stop; i += step) picked.push_back(static_cast<std::size_t>(i));
  if (is_string) {
    std::string out;
    for (auto i : picked) {
      if (ascii) out += obj.as_string()[i];
      else utf8::append(out, chars[i]);
    }
    return value::string(std::move(out));
  }
  std::vector<value> items;
  items.reserve(picked.size());
  for (auto i : picked) items.push_back(obj.as_list().items[i]);
  return value::list(std::move(items), obj.as_list().is_tuple);
}

value interpreter::eval_binary(const binary_expr& b) {
  if (b.op == binary_op::logical_and || b.op == binary_op::logical_or) {
    value left = eval(*b.left);
    const bool decided = truthy(left) == (b.op == binary_op::logical_or);
    return decided ? left : eval(*b.right);
  }
  value left = eval(*b.left);
  value right = eval(*b.right);
  if (b.op == binary_op::concat) {
    std::string out = to_str(left);
    append_str(out, right);
    check_size(out.size());
    return value::string(std::move(out));
  }
  if (left.is_undefined()) undefined_error(left);
  if (right.is_undefined()) undefined_error(right);
  static constexpr std::string_view symbols[] = {"+", "-", "*", "/", "//", "%", "**"};
  return arithmetic(b.op, symbols[static_cast<int>(b.op)], left, right);
}

value interpreter::eval_compare(const compare_expr& c) {
  value left = eval(*c.first);
  for (const auto& [op, operand] : c.rest) {
    value right = eval(*operand);
    bool holds = false;
    switch (op) {
      case compare_op::eq: holds = equals(left, right); break;
      case compare_op::ne: holds = !equals(left, right); break;
      case compare_op::lt: holds = compare(left, right, "<") < 0; break;
      case compare_op::le: holds = compare(left, right, "<=") <= 0; break;
      case compare_op::gt: holds = compare(left, right, ">") > 0; break;
      case compare_op::ge: holds = compare(left, right, ">=") >= 0; break;
      case compare_op::in: holds = contains(right, left); break;
      case compare_op::not_in: holds = !contains(right, left); break;
    }
    if (!holds) return value::boolean(false);
    left = std::move(right);
  }
  return value::boolean(true);
}

value interpreter::call_macro(const macro_definition& def, const std::shared_ptr<frame>& closure, arguments& args) {
  const auto& params = def.params;
  if (args.positional.size() > params.size() && !def.takes_varargs)
    fail("macro '" + std::string(def.name) + "' takes not more than " + std::to_string(params.size()) +
         " argument(s)");
  if (call_depth_ >= max_call_depth) fail("maximum macro recursion depth exceeded");
  auto scope = child_of(closure);
  std::vector<bool> bound(params.size(), false);
  for (std::size_t i = 0; i < args.positional.size() && i < params.size(); ++i) {
    scope->set(params[i].name, std::move(args.positional[i]));
    bound[i] = true;
  }
  auto kwargs = std::make_shared<dict_data>();
  for (auto& [name, v] : args.named) {
    std::size_t i = 0;
    while (i < params.size() && params[i].name != name) ++i;
    if (i < params.size()) {
      if (bound[i]) fail("macro '" + std::string(def.name) + "' got multiple values for argument '" + std::string(name) + "'");
      scope->set(params[i].name, std::move(v));
      bound[i] = true;
    } else if (name == "caller" && def.takes_caller) {
      scope->set("caller", std::move(v));
    } else if (def.takes_kwargs) {
      kwargs->set(value::string(std::string(name)), std::move(v));
    } else {
      fail("macro '" + std::string(def.name) + "' takes no keyword argument '" + std::string(name) + "'");
    }
  }
  const frame_swap swap(frame_, scope);
  const depth_guard depth(call_depth_);
  for (std::size_t i = 0; i < params.size(); ++i)
    if (!bound[i])
      scope->set(params[i].name, params[i].default_value ? eval(*params[i].default_value) : value::undefined(nullptr));
  if (def.takes_varargs) {
    std::vector<value> extra;
    for (std::size_t i = params.size(); i < args.positional.size(); ++i) extra.push_back(std::move(args.positional[i]));
    scope->set("varargs", value::list(std::move(extra), true));
  }
  if (def.takes_kwargs) scope->set("kwargs", value::dict(std::move(kwargs)));
  std::string out;
  exec(def.content, out);
  return value::string(std::move(out));
}

interpreter::flow interpreter::exec(const body& b, std::string& out) {
  for (const auto& s : b) {
    const flow f = exec(*s, out);
    if (f != flow::normal) return f;
  }
  return flow::normal;
}

void interpreter::count_step() {
  if (++steps_ > max_render_steps)
    throw template_error(errc::resource_exhausted, "the template runs more than " +
                                                       std::to_string(max_render_steps) + " statements and loop iterations");
}

interpreter::flow interpreter::exec(const stmt& s, std::string& out) {
  try {
    count_step();
    const flow f = exec_node(s, out);
    check_size(out.size());
    return f;
  } catch (template_error& err) {
    if (err.offset() == template_error::no_offset && !err.verbatim()) err.set_offset(s.where.begin);
    throw;
  }
}

std::string interpreter::render_scoped(const body& b) {
  const frame_swap scope(frame_, child_of(frame_));
  std::string out;
  exec(b, out);
  return out;
}

interpreter::flow interpreter::exec_node(const stmt& s, std::string& out) {
  switch (s.kind) {
    case stmt_kind::text: out += static_cast<const text_stmt&>(s).text; return flow::normal;
    case stmt_kind::output: append_str(out, eval(*static_cast<const output_stmt&>(s).value)); return flow::normal;
    case stmt_kind::if_chain: {
      const auto& i = static_cast<const if_stmt&>(s);
      for (const auto& [condition, branch] : i.branches)
        if (truthy(eval(*condition))) return exec(branch, out);
      return exec(i.otherwise, out);
    }
    case stmt_kind::for_loop: return exec_for(static_cast<const for_stmt&>(s), out);
    case stmt_kind::set: {
      const auto& set = static_cast<const set_stmt&>(s);
      assign(set.target, eval(*set.value));
      return flow::normal;
    }
    case stmt_kind::set_block: {
      const auto& set = static_cast<const set_block_stmt&>(s);
      value v = value::string(render_scoped(set.content));
      for (const auto& f : set.filters) v = apply_filter(*f, std::move(v));
      assign(set.target, std::move(v));
      return flow::normal;
    }
    case stmt_kind::macro: {
      const auto& def = static_cast<const macro_stmt&>(s).definition;
      frame_->set(def.name, make_object(std::make_shared<macro_object>(def, frame_)));
      return flow::normal;
    }
    case stmt_kind::call_block: {
      const auto& c = static_cast<const call_block_stmt&>(s);
      value callee = eval(*c.call->callee);
      arguments args;
      eval_args(c.call->args, c.call->kwargs, args);
      args.named.emplace_back("caller", make_object(std::make_shared<macro_object>(c.caller, frame_)));
      append_str(out, call(callee, args));
      return flow::normal;
    }
    case stmt_kind::filter_block: {
      const auto& f = static_cast<const filter_block_stmt&>(s);
      value v = value::string(render_scoped(f.content));
      for (const auto& filter : f.filters) v = apply_filter(*filter, std::move(v));
      append_str(out, v);
      return flow::normal;
    }
    case stmt_kind::scope: {
      const auto& sc = static_cast<const scope_stmt&>(s);
      auto inner = child_of(frame_);
      for (const auto& [name, e] : sc.assignments) inner->set(name, eval(*e));
      const frame_swap scope(frame_, std::move(inner));
      return exec(sc.content, out);
    }
    case stmt_kind::loop_control:
      return static_cast<const loop_control_stmt&>(s).is_break ? flow::break_loop : flow::continue_loop;
  }
  return flow::normal;
}

void interpreter::bind_targets(frame& f, const std::vector<std::string_view>& targets, bool unpack,
                               const value& item) {
  if (!unpack) {
    f.set(targets.front(), item);
    return;
  }
  if (item.is_undefined()) undefined_error(item);
  if (!item.is_string() && !item.is_list() && !item.is_dict())
    fail("cannot unpack non-iterable " + std::string(type_name(item)) + " object");
  auto parts = iterate(item);
  if (parts.size() < targets.size())
    fail("not enough values to unpack (expected " + std::to_string(targets.size()) + ", got " +
         std::to_string(parts.size()) + ")");
  if (parts.size() > targets.size())
    fail("too many values to unpack (expected " + std::to_string(targets.size()) + ")");
  for (std::size_t i = 0; i < targets.size(); ++i) f.set(targets[i], std::move(parts[i]));
}

interpreter::flow interpreter::exec_for(const for_stmt& s, std::string& out) {
  const value iterable = eval(*s.iterable);
  std::vector<value> items = iterate(iterable);
  const frame_swap scope(frame_, child_of(frame_));
  if (s.filter) {
    std::vector<value> kept;
    for (auto& item : items) {
      count_step();
      frame_->vars.clear();
      bind_targets(*frame_, s.targets, s.unpack, item);
      if (truthy(eval(*s.filter))) kept.push_back(std::move(item));
    }
    items = std::move(kept);
  }
  if (items.empty()) {
    frame_->vars.clear();
    return exec(s.otherwise, out);
  }
  auto loop = std::make_shared<loop_object>(std::move(items));
  const value loop_value = value::object(loop);
  for (std::size_t i = 0; i < loop->items().size(); ++i) {
    frame_->vars.clear();
    bind_targets(*frame_, s.targets, s.unpack, loop->items()[i]);
    loop->advance_to(i);
    frame_->set("loop", loop_value);
    count_step();
    if (exec(s.loop_body, out) == flow::break_loop) break;
  }
  return flow::normal;
}

void interpreter::assign(const assign_target& target, value v) {
  if (!target.attribute.empty()) {
    value* ns = nullptr;
    for (frame* f = frame_.get(); f && !ns; f = f->parent.get()) ns = f->find(target.names.front());
    if (!ns) fail("'" + std::string(target.names.front()) + "' is not a namespace defined in the template");
    auto* object = ns->is_object() ? dynamic_cast<namespace_object*>(&ns->as_object()) : nullptr;
    if (!object) fail("cannot assign attribute on non-namespace object '" + std::string(target.names.front()) + "'");
    object->set(target.attribute, std::move(v));
    return;
  }
  bind_targets(*frame_, target.names, target.unpack, v);
}

}  // namespace chatai::engine::jinja
