// A recursive-descent parser for Jinja2's statements and expressions, with its precedence.
#include "template_parser.hpp"

#include <algorithm>
#include <initializer_list>

#include "template_builtins.hpp"
#include "template_lexer.hpp"

namespace chatai::engine::jinja {

std::pair<std::size_t, std::size_t> line_column(std::string_view source, std::size_t offset) {
  offset = std::min(offset, source.size());
  std::size_t line = 1, column = 1;
  for (std::size_t i = 0; i < offset; ++i) {
    if (source[i] == '\n') {
      ++line;
      column = 1;
    } else if ((static_cast<unsigned char>(source[i]) & 0xC0) != 0x80) {
      ++column;
    }
  }
  return {line, column};
}

namespace {

// Jinja2 tags that chatai does not implement: templates loaded from other files, and
// extensions Hugging Face does not enable.
constexpr std::string_view unsupported_tags[] = {"extends", "block", "include", "import", "from", "autoescape",
                                                 "do", "trans", "pluralize", "debug"};

// Deeper nesting of blocks and expressions than this is refused, so that a hostile template
// cannot exhaust the stack of the parser or the interpreter.
constexpr int max_nesting = 200;

[[noreturn]] void syntax_error(std::string message, std::size_t offset) {
  throw template_error(errc::parse_error, std::move(message), offset);
}

[[noreturn]] void unsupported(std::string message, std::size_t offset) {
  throw template_error(errc::unsupported, std::move(message), offset);
}

std::string describe(const token& t) {
  switch (t.kind) {
    case token_kind::end: return "end of template";
    case token_kind::print_end: return "'}}'";
    case token_kind::block_end: return "'%}'";
    case token_kind::string: return "string literal";
    default: return "'" + std::string(t.raw) + "'";
  }
}

class parser {
 public:
  explicit parser(program& prog) : prog_(prog), tokens_(tokenize(prog.source)) {}

  void run() {
    std::string_view ended;
    prog_.root = parse_body({}, ended, 0, {});
  }

 private:
  const token& current() const { return tokens_[pos_]; }
  const token& look(std::size_t ahead = 1) const { return tokens_[std::min(pos_ + ahead, tokens_.size() - 1)]; }
  const token& advance() { return tokens_[pos_ < tokens_.size() - 1 ? pos_++ : pos_]; }
  std::size_t previous_end() const { return pos_ > 0 ? tokens_[pos_ - 1].end : 0; }

  bool at_op(std::string_view op) const { return current().kind == token_kind::op && current().raw == op; }
  bool at_name(std::string_view word) const { return current().kind == token_kind::name && current().raw == word; }
  bool skip_op(std::string_view op) {
    if (!at_op(op)) return false;
    advance();
    return true;
  }
  bool skip_name(std::string_view word) {
    if (!at_name(word)) return false;
    advance();
    return true;
  }
  [[noreturn]] void unexpected(std::string_view expected) const {
    syntax_error("expected " + std::string(expected) + ", got " + describe(current()), current().offset);
  }
  void expect_op(std::string_view op) {
    if (!skip_op(op)) unexpected("'" + std::string(op) + "'");
  }
  std::string_view expect_name() {
    if (current().kind != token_kind::name) unexpected("a name");
    return advance().raw;
  }
  void expect_block_end() {
    if (current().kind != token_kind::block_end) unexpected("'%}'");
    advance();
  }

  // Counts one level of nesting while it lives.
  class nesting {
   public:
    explicit nesting(parser& p) : p_(p) {
      if (++p_.depth_ > max_nesting)
        syntax_error("the template nests blocks or expressions more than " + std::to_string(max_nesting) +
                         " levels deep",
                     p_.current().offset);
    }
    ~nesting() { --p_.depth_; }
    nesting(const nesting&) = delete;
    nesting& operator=(const nesting&) = delete;

   private:
    parser& p_;
  };

  template <class Node>
  std::unique_ptr<Node> make(std::size_t begin) {
    auto n = std::make_unique<Node>();
    n->where.begin = begin;
    return n;
  }
  template <class Node>
  std::unique_ptr<Node> finish(std::unique_ptr<Node> n) {
    n->where.end = std::max(previous_end(), n->where.begin);
    return n;
  }

  // --- statements ---

  // Statements up to a tag named in `enders` (left unconsumed: the position is at its name),
  // whose name goes to `ended`. `opener` names the tag being closed, for errors.
  body parse_body(std::initializer_list<std::string_view> enders, std::string_view& ended, std::size_t opener_offset,
                  std::string_view opener) {
    body out;
    while (true) {
      const token& t = current();
      if (t.kind == token_kind::end) {
        if (enders.size() == 0) return out;
        std::string names;
        for (auto e : enders) names += (names.empty() ? "" : " or ") + std::string("{% ") + std::string(e) + " %}";
        syntax_error("unexpected end of template: the '" + std::string(opener) + "' tag needs " + names,
                     opener_offset);
      }
      if (t.kind == token_kind::text) {
        auto s = make<text_stmt>(t.offset);
        s->text = t.text;
        advance();
        out.push_back(finish(std::move(s)));
      } else if (t.kind == token_kind::print_begin) {
        auto s = make<output_stmt>(t.offset);
        advance();
        s->value = parse_tuple(true, false);
        if (current().kind != token_kind::print_end) unexpected("'}}'");
        advance();
        out.push_back(finish(std::move(s)));
      } else if (t.kind == token_kind::block_begin) {
        const token& name = look();
        if (name.kind == token_kind::name && std::find(enders.begin(), enders.end(), name.raw) != enders.end()) {
          advance();
          ended = name.raw;
          return out;
        }
        advance();
        out.push_back(parse_statement(t.offset));
      } else {
        unexpected("text or a tag");
      }
    }
  }

  stmt_ptr parse_statement(std::size_t begin) {
    const nesting guard(*this);
    if (current().kind != token_kind::name) unexpected("a tag name");
    const token& tag = current();
    const std::string_view name = tag.raw;
    if (name == "for") return parse_for(begin);
    if (name == "if") return parse_if(begin);
    if (name == "set") return parse_set(begin);
    if (name == "macro") return parse_macro(begin);
    if (name == "call") return parse_call_block(begin);
    if (name == "filter") return parse_filter_block(begin);
    if (name == "with") return parse_with(begin);
    if (name == "generation") return parse_generation(begin);
    if (name == "break" || name == "continue") {
      if (loop_depth_ == 0) syntax_error("'" + std::string(name) + "' outside of a loop", tag.offset);
      auto s = make<loop_control_stmt>(begin);
      s->is_break = name == "break";
      advance();
      expect_block_end();
      return finish(std::move(s));
    }
    if (std::find(std::begin(unsupported_tags), std::end(unsupported_tags), name) != std::end(unsupported_tags))
      unsupported("the '" + std::string(name) + "' tag is not supported", tag.offset);
    static constexpr std::string_view closers[] = {"endfor", "endif", "elif", "else", "endset", "endmacro",
                                                   "endcall", "endfilter", "endwith", "endgeneration", "endraw"};
    if (std::find(std::begin(closers), std::end(closers), name) != std::end(closers))
      syntax_error("unexpected '" + std::string(name) + "' tag: no open block takes it here", tag.offset);
    syntax_error("unknown tag '" + std::string(name) + "'", tag.offset);
  }

  void expect_end_tag(std::string_view name) {
    if (!at_name(name)) unexpected("'" + std::string(name) + "'");
    advance();
    expect_block_end();
  }

  std::vector<std::string_view> parse_target_names(bool& unpack) {
    std::vector<std::string_view> names;
    const bool parenthesized = skip_op("(");
    names.push_back(expect_name());
    while (skip_op(",")) {
      if (current().kind != token_kind::name || at_name("in")) break;
      names.push_back(expect_name());
    }
    unpack = names.size() > 1 || (parenthesized && tokens_[pos_ - 1].raw == ",");
    if (parenthesized) expect_op(")");
    return names;
  }

  stmt_ptr parse_for(std::size_t begin) {
    auto s = make<for_stmt>(begin);
    const std::size_t tag_offset = advance().offset;
    s->targets = parse_target_names(s->unpack);
    if (!skip_name("in")) unexpected("'in'");
    s->iterable = parse_tuple(false, false);
    if (skip_name("if")) s->filter = parse_expression(true);
    if (at_name("recursive")) unsupported("recursive loops are not supported", current().offset);
    expect_block_end();
    std::string_view ended;
    ++loop_depth_;
    s->loop_body = parse_body({"else", "endfor"}, ended, tag_offset, "for");
    --loop_depth_;
    if (ended == "else") {
      advance();
      expect_block_end();
      s->otherwise = parse_body({"endfor"}, ended, tag_offset, "for");
    }
    expect_end_tag("endfor");
    return finish(std::move(s));
  }

  stmt_ptr parse_if(std::size_t begin) {
    auto s = make<if_stmt>(begin);
    const std::size_t tag_offset = advance().offset;
    while (true) {
      auto condition = parse_tuple(false, false);
      expect_block_end();
      std::string_view ended;
      auto branch = parse_body({"elif", "else", "endif"}, ended, tag_offset, "if");
      s->branches.emplace_back(std::move(condition), std::move(branch));
      if (ended == "elif") {
        advance();
        continue;
      }
      if (ended == "else") {
        advance();
        expect_block_end();
        s->otherwise = parse_body({"endif"}, ended, tag_offset, "if");
      }
      break;
    }
    expect_end_tag("endif");
    return finish(std::move(s));
  }

  assign_target parse_assign_target() {
    assign_target target;
    if (current().kind == token_kind::name && look().kind == token_kind::op && look().raw == ".") {
      target.names.push_back(advance().raw);
      advance();
      target.attribute = expect_name();
      return target;
    }
    target.names = parse_target_names(target.unpack);
    return target;
  }

  std::vector<std::unique_ptr<filter_expr>> parse_filter_chain() {
    std::vector<std::unique_ptr<filter_expr>> filters;
    do filters.push_back(parse_filter(nullptr, current().offset));
    while (skip_op("|"));
    return filters;
  }

  stmt_ptr parse_set(std::size_t begin) {
    const std::size_t tag_offset = advance().offset;
    auto target = parse_assign_target();
    if (skip_op("=")) {
      auto s = make<set_stmt>(begin);
      s->target = std::move(target);
      s->value = parse_tuple(true, false);
      expect_block_end();
      return finish(std::move(s));
    }
    auto s = make<set_block_stmt>(begin);
    s->target = std::move(target);
    if (skip_op("|")) s->filters = parse_filter_chain();
    expect_block_end();
    std::string_view ended;
    s->content = parse_body({"endset"}, ended, tag_offset, "set");
    expect_end_tag("endset");
    return finish(std::move(s));
  }

  void parse_params(macro_definition& def) {
    expect_op("(");
    while (!at_op(")")) {
      if (!def.params.empty()) expect_op(",");
      if (at_op(")")) break;
      macro_param p;
      p.name = expect_name();
      if (skip_op("=")) p.default_value = parse_expression(true);
      else if (!def.params.empty() && def.params.back().default_value)
        syntax_error("a parameter without a default follows one with a default", tokens_[pos_ - 1].offset);
      def.params.push_back(std::move(p));
    }
    advance();
  }

  // The body of a macro or call block; names it reads (varargs, kwargs, caller) are noted.
  body parse_macro_body(macro_definition& def, std::size_t tag_offset, std::string_view opener,
                        std::string_view closer) {
    macros_.push_back(&def);
    const int saved_depth = loop_depth_;
    loop_depth_ = 0;
    std::string_view ended;
    auto content = parse_body({closer}, ended, tag_offset, opener);
    loop_depth_ = saved_depth;
    macros_.pop_back();
    expect_end_tag(closer);
    return content;
  }

  stmt_ptr parse_macro(std::size_t begin) {
    auto s = make<macro_stmt>(begin);
    const std::size_t tag_offset = advance().offset;
    s->definition.name = expect_name();
    parse_params(s->definition);
    expect_block_end();
    s->definition.content = parse_macro_body(s->definition, tag_offset, "macro", "endmacro");
    return finish(std::move(s));
  }

  stmt_ptr parse_call_block(std::size_t begin) {
    auto s = make<call_block_stmt>(begin);
    const std::size_t tag_offset = advance().offset;
    s->caller.name = "caller";
    if (at_op("(")) parse_params(s->caller);
    const std::size_t call_offset = current().offset;
    auto callee = parse_expression(true);
    if (callee->kind != expr_kind::call) syntax_error("the 'call' tag needs a call expression", call_offset);
    s->call.reset(static_cast<call_expr*>(callee.release()));
    expect_block_end();
    s->caller.content = parse_macro_body(s->caller, tag_offset, "call", "endcall");
    return finish(std::move(s));
  }

  stmt_ptr parse_filter_block(std::size_t begin) {
    auto s = make<filter_block_stmt>(begin);
    const std::size_t tag_offset = advance().offset;
    s->filters = parse_filter_chain();
    expect_block_end();
    std::string_view ended;
    s->content = parse_body({"endfilter"}, ended, tag_offset, "filter");
    expect_end_tag("endfilter");
    return finish(std::move(s));
  }

  stmt_ptr parse_with(std::size_t begin) {
    auto s = make<scope_stmt>(begin);
    const std::size_t tag_offset = advance().offset;
    while (current().kind != token_kind::block_end) {
      if (!s->assignments.empty()) expect_op(",");
      const auto name = expect_name();
      expect_op("=");
      s->assignments.emplace_back(name, parse_expression(true));
    }
    expect_block_end();
    std::string_view ended;
    s->content = parse_body({"endwith"}, ended, tag_offset, "with");
    expect_end_tag("endwith");
    return finish(std::move(s));
  }

  stmt_ptr parse_generation(std::size_t begin) {
    auto s = make<scope_stmt>(begin);
    const std::size_t tag_offset = advance().offset;
    expect_block_end();
    std::string_view ended;
    s->content = parse_body({"endgeneration"}, ended, tag_offset, "generation");
    expect_end_tag("endgeneration");
    return finish(std::move(s));
  }

  // --- expressions, lowest precedence first ---

  bool at_tuple_end(bool explicit_parentheses) const {
    const auto k = current().kind;
    if (k == token_kind::print_end || k == token_kind::block_end || k == token_kind::end) return true;
    if (explicit_parentheses && at_op(")")) return true;
    return false;
  }

  // Expressions separated by commas form a tuple; `with_condexpr` allows "a if c else b".
  expr_ptr parse_tuple(bool with_condexpr, bool explicit_parentheses) {
    const std::size_t begin = current().offset;
    std::vector<expr_ptr> items;
    bool is_tuple = false;
    while (true) {
      if (!items.empty()) expect_op(",");
      if (at_tuple_end(explicit_parentheses)) break;
      items.push_back(with_condexpr ? parse_expression(true) : parse_or());
      if (at_op(",")) is_tuple = true;
      else break;
    }
    if (!is_tuple) {
      if (!items.empty()) return std::move(items.front());
      if (!explicit_parentheses) unexpected("an expression");
    }
    auto t = make<list_expr>(begin);
    t->items = std::move(items);
    t->is_tuple = true;
    return finish(std::move(t));
  }

  expr_ptr parse_expression(bool with_condexpr) {
    const nesting guard(*this);
    if (!with_condexpr) return parse_or();
    const std::size_t begin = current().offset;
    auto node = parse_or();
    while (skip_name("if")) {
      auto c = make<conditional_expr>(begin);
      c->then = std::move(node);
      c->condition = parse_or();
      if (skip_name("else")) c->otherwise = parse_expression(true);
      node = finish(std::move(c));
    }
    return node;
  }

  expr_ptr binary(std::size_t begin, binary_op op, expr_ptr left, expr_ptr right) {
    auto b = make<binary_expr>(begin);
    b->op = op;
    b->left = std::move(left);
    b->right = std::move(right);
    return finish(std::move(b));
  }

  expr_ptr parse_or() {
    const std::size_t begin = current().offset;
    auto left = parse_and();
    while (skip_name("or")) left = binary(begin, binary_op::logical_or, std::move(left), parse_and());
    return left;
  }

  expr_ptr parse_and() {
    const std::size_t begin = current().offset;
    auto left = parse_not();
    while (skip_name("and")) left = binary(begin, binary_op::logical_and, std::move(left), parse_not());
    return left;
  }

  expr_ptr parse_not() {
    const nesting guard(*this);
    if (at_name("not")) {
      auto u = make<unary_expr>(advance().offset);
      u->op = unary_op::logical_not;
      u->operand = parse_not();
      return finish(std::move(u));
    }
    return parse_compare();
  }

  expr_ptr parse_compare() {
    const std::size_t begin = current().offset;
    auto first = parse_math1();
    std::vector<std::pair<compare_op, expr_ptr>> rest;
    while (true) {
      compare_op op;
      if (skip_op("==")) op = compare_op::eq;
      else if (skip_op("!=")) op = compare_op::ne;
      else if (skip_op("<")) op = compare_op::lt;
      else if (skip_op("<=")) op = compare_op::le;
      else if (skip_op(">")) op = compare_op::gt;
      else if (skip_op(">=")) op = compare_op::ge;
      else if (skip_name("in")) op = compare_op::in;
      else if (at_name("not") && look().kind == token_kind::name && look().raw == "in") {
        advance();
        advance();
        op = compare_op::not_in;
      } else {
        break;
      }
      rest.emplace_back(op, parse_math1());
    }
    if (rest.empty()) return first;
    auto c = make<compare_expr>(begin);
    c->first = std::move(first);
    c->rest = std::move(rest);
    return finish(std::move(c));
  }

  expr_ptr parse_math1() {
    const std::size_t begin = current().offset;
    auto left = parse_concat();
    while (at_op("+") || at_op("-")) {
      const auto op = advance().raw == "+" ? binary_op::add : binary_op::sub;
      left = binary(begin, op, std::move(left), parse_concat());
    }
    return left;
  }

  expr_ptr parse_concat() {
    const std::size_t begin = current().offset;
    auto left = parse_math2();
    while (skip_op("~")) left = binary(begin, binary_op::concat, std::move(left), parse_math2());
    return left;
  }

  expr_ptr parse_math2() {
    const std::size_t begin = current().offset;
    auto left = parse_pow();
    while (at_op("*") || at_op("/") || at_op("//") || at_op("%")) {
      const auto raw = advance().raw;
      const auto op = raw == "*" ? binary_op::mul
                      : raw == "/" ? binary_op::div
                      : raw == "//" ? binary_op::floordiv
                                    : binary_op::mod;
      left = binary(begin, op, std::move(left), parse_pow());
    }
    return left;
  }

  expr_ptr parse_pow() {
    const std::size_t begin = current().offset;
    auto left = parse_unary(true);
    while (skip_op("**")) left = binary(begin, binary_op::pow, std::move(left), parse_unary(true));
    return left;
  }

  expr_ptr parse_unary(bool with_filter) {
    const nesting guard(*this);
    const std::size_t begin = current().offset;
    expr_ptr node;
    if (at_op("-") || at_op("+")) {
      auto u = make<unary_expr>(begin);
      u->op = advance().raw == "-" ? unary_op::negate : unary_op::plus;
      u->operand = parse_unary(false);
      node = finish(std::move(u));
    } else {
      node = parse_primary();
    }
    node = parse_postfix(std::move(node), begin);
    if (with_filter) node = parse_filter_expr(std::move(node), begin);
    return node;
  }

  expr_ptr literal(std::size_t begin, value v) {
    auto l = make<literal_expr>(begin);
    l->value = std::move(v);
    return finish(std::move(l));
  }

  expr_ptr parse_primary() {
    const token& t = current();
    const std::size_t begin = t.offset;
    switch (t.kind) {
      case token_kind::name: {
        advance();
        if (t.raw == "true" || t.raw == "True") return literal(begin, value::boolean(true));
        if (t.raw == "false" || t.raw == "False") return literal(begin, value::boolean(false));
        if (t.raw == "none" || t.raw == "None") return literal(begin, value::none());
        for (auto* def : macros_) {
          if (t.raw == "varargs") def->takes_varargs = true;
          if (t.raw == "kwargs") def->takes_kwargs = true;
          if (t.raw == "caller") def->takes_caller = true;
        }
        auto n = make<name_expr>(begin);
        n->name = t.raw;
        return finish(std::move(n));
      }
      case token_kind::string: {
        std::string text;
        while (current().kind == token_kind::string) text += advance().text;
        return literal(begin, value::string(std::move(text)));
      }
      case token_kind::integer:
        advance();
        return literal(begin, value::integer(t.integer));
      case token_kind::floating:
        advance();
        return literal(begin, value::floating(t.floating));
      case token_kind::op:
        if (skip_op("(")) {
          auto inner = parse_tuple(true, true);
          expect_op(")");
          return inner;
        }
        if (skip_op("[")) {
          auto l = make<list_expr>(begin);
          while (!at_op("]")) {
            if (!l->items.empty()) expect_op(",");
            if (at_op("]")) break;
            l->items.push_back(parse_expression(true));
          }
          advance();
          return finish(std::move(l));
        }
        if (skip_op("{")) {
          auto d = make<dict_expr>(begin);
          while (!at_op("}")) {
            if (!d->items.empty()) expect_op(",");
            if (at_op("}")) break;
            auto key = parse_expression(true);
            expect_op(":");
            d->items.emplace_back(std::move(key), parse_expression(true));
          }
          advance();
          return finish(std::move(d));
        }
        break;
      default:
        break;
    }
    unexpected("an expression");
  }

  expr_ptr parse_postfix(expr_ptr node, std::size_t begin) {
    while (true) {
      if (at_op(".")) {
        advance();
        if (current().kind == token_kind::integer) {
          auto s = make<subscript_expr>(begin);
          s->object = std::move(node);
          s->index = literal(current().offset, value::integer(current().integer));
          advance();
          node = finish(std::move(s));
          continue;
        }
        auto a = make<attribute_expr>(begin);
        a->object = std::move(node);
        a->name = expect_name();
        node = finish(std::move(a));
      } else if (at_op("[")) {
        node = parse_subscript(std::move(node), begin);
      } else if (at_op("(")) {
        node = parse_call(std::move(node), begin);
      } else {
        return node;
      }
    }
  }

  expr_ptr parse_subscript(expr_ptr object, std::size_t begin) {
    advance();
    expr_ptr parts[3];
    int colons = 0;
    while (true) {
      if (at_op(":")) {
        if (++colons > 2) unexpected("']'");
        advance();
        continue;
      }
      if (at_op("]")) break;
      if (at_op(",")) unsupported("subscripts with several indices are not supported", current().offset);
      if (parts[colons]) unexpected("']' or ':'");
      parts[colons] = parse_expression(true);
    }
    advance();
    if (colons == 0) {
      if (!parts[0]) syntax_error("empty subscript", begin);
      auto s = make<subscript_expr>(begin);
      s->object = std::move(object);
      s->index = std::move(parts[0]);
      return finish(std::move(s));
    }
    auto s = make<slice_expr>(begin);
    s->object = std::move(object);
    s->start = std::move(parts[0]);
    s->stop = std::move(parts[1]);
    s->step = std::move(parts[2]);
    return finish(std::move(s));
  }

  void parse_call_args(std::vector<expr_ptr>& args, std::vector<keyword_arg>& kwargs) {
    expect_op("(");
    while (!at_op(")")) {
      if (!args.empty() || !kwargs.empty()) expect_op(",");
      if (at_op(")")) break;
      if (at_op("*") || at_op("**"))
        unsupported("argument unpacking (*args, **kwargs) is not supported", current().offset);
      if (current().kind == token_kind::name && look().kind == token_kind::op && look().raw == "=") {
        keyword_arg k;
        k.name = advance().raw;
        advance();
        k.value = parse_expression(true);
        kwargs.push_back(std::move(k));
      } else {
        if (!kwargs.empty()) syntax_error("a positional argument follows a keyword argument", current().offset);
        args.push_back(parse_expression(true));
      }
    }
    advance();
  }

  expr_ptr parse_call(expr_ptr callee, std::size_t begin) {
    auto c = make<call_expr>(begin);
    c->callee = std::move(callee);
    parse_call_args(c->args, c->kwargs);
    return finish(std::move(c));
  }

  std::unique_ptr<filter_expr> parse_filter(expr_ptr operand, std::size_t begin) {
    auto f = make<filter_expr>(begin);
    const std::size_t name_offset = current().offset;
    f->name = expect_name();
    f->fn = find_filter(f->name);
    if (!f->fn) {
      if (is_jinja_filter(f->name)) unsupported("the filter '" + std::string(f->name) + "' is not supported", name_offset);
      syntax_error("no filter named '" + std::string(f->name) + "'", name_offset);
    }
    f->operand = std::move(operand);
    if (at_op("(")) parse_call_args(f->args, f->kwargs);
    return finish(std::move(f));
  }

  expr_ptr parse_test(expr_ptr operand, std::size_t begin) {
    auto t = make<test_expr>(begin);
    t->operand = std::move(operand);
    t->negated = skip_name("not");
    const std::size_t name_offset = current().offset;
    t->name = expect_name();
    t->fn = find_test(t->name);
    if (!t->fn) {
      if (is_jinja_test(t->name)) unsupported("the test '" + std::string(t->name) + "' is not supported", name_offset);
      syntax_error("no test named '" + std::string(t->name) + "'", name_offset);
    }
    if (at_op("(")) {
      parse_call_args(t->args, t->kwargs);
    } else if ((current().kind == token_kind::name && !at_name("else") && !at_name("or") && !at_name("and")) ||
               current().kind == token_kind::string || current().kind == token_kind::integer ||
               current().kind == token_kind::floating || at_op("(") || at_op("[") || at_op("{")) {
      if (at_name("is")) syntax_error("tests cannot be chained with 'is'", current().offset);
      const std::size_t arg_begin = current().offset;
      t->args.push_back(parse_postfix(parse_primary(), arg_begin));
    }
    return finish(std::move(t));
  }

  expr_ptr parse_filter_expr(expr_ptr node, std::size_t begin) {
    while (true) {
      if (skip_op("|")) node = parse_filter(std::move(node), begin);
      else if (skip_name("is")) node = parse_test(std::move(node), begin);
      else if (at_op("(")) node = parse_call(std::move(node), begin);
      else return node;
    }
  }

  program& prog_;
  std::vector<token> tokens_;
  std::size_t pos_ = 0;
  int loop_depth_ = 0;
  int depth_ = 0;
  std::vector<macro_definition*> macros_;
};

}  // namespace

void parse_program(program& prog) { parser(prog).run(); }

}  // namespace chatai::engine::jinja
