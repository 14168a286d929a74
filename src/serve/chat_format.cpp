// Chat requests into prompts and grammars, model output into content, reasoning and calls.
#include "chatai/serve/chat_format.hpp"

#include <algorithm>
#include <random>

#include "chatai/core/json.hpp"

namespace chatai::serve {

namespace {

constexpr std::string_view think_open = "<think>";
constexpr std::string_view think_close = "</think>";
constexpr std::string_view hermes_open = "<tool_call>";
constexpr std::string_view hermes_close = "</tool_call>";
constexpr std::string_view mistral_marker = "[TOOL_CALLS]";
constexpr std::string_view python_tag = "<|python_tag|>";
constexpr std::int64_t max_parallel_calls = 8;

bool is_space(char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; }

std::string_view trim_left(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  return s;
}

std::string_view trim(std::string_view s) {
  s = trim_left(s);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

bool blank(std::string_view s) { return trim_left(s).empty(); }

// The length of the longest end of `text` that is the start of `marker` (text that may still
// become the marker).
std::size_t partial_suffix(std::string_view text, std::string_view marker) {
  for (std::size_t n = std::min(text.size(), marker.size() - 1); n > 0; --n) {
    if (text.substr(text.size() - n) == marker.substr(0, n)) return n;
  }
  return 0;
}

rapidjson::Value string_value(std::string_view s, rapidjson::Document::AllocatorType& alloc) {
  return rapidjson::Value(s.data(), static_cast<rapidjson::SizeType>(s.size()), alloc);
}

std::string hermes_call_text(const tool_call& call) {
  std::string out = "<tool_call>\n{\"name\": ";
  json::append_quoted(out, call.name);
  out += ", \"arguments\": ";
  out += call.arguments;
  out += "}\n</tool_call>";
  return out;
}

// The Hermes function-calling instructions, for templates that do not render tools themselves.
std::string tools_instructions(const rapidjson::Value& tools) {
  std::string out =
      "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
      "You are provided with function signatures within <tools></tools> XML tags:\n<tools>";
  for (const auto& t : tools.GetArray()) {
    out += '\n';
    out += json::to_string(t);
  }
  out +=
      "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
      "<tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n"
      "</tool_call>";
  return out;
}

// The grammar rule of one function's call object in the family's syntax.
result<engine::grammar_builder::rule> call_rule(engine::grammar_builder& g, tool_syntax syntax,
                                                const tool_definition& tool, std::size_t index,
                                                std::string* failed_param) {
  engine::grammar_builder::rule args = 0;
  if (tool.parameters.empty()) {
    args = g.any_json_object();
  } else {
    auto schema = json::parse(tool.parameters);
    if (!schema) return std::move(schema).err();
    auto compiled = g.json_schema(*schema, "tools[" + std::to_string(index) + "].function.parameters");
    if (!compiled) {
      *failed_param = "tools";
      return std::move(compiled).err();
    }
    args = *compiled;
  }
  std::string head = "{\"name\": ";
  json::append_quoted(head, tool.name);
  head += syntax == tool_syntax::llama3 ? ", \"parameters\": " : ", \"arguments\": ";
  return g.sequence({g.literal(head), args, g.literal("}")});
}

// The output of a forced tool_choice: one call (or up to max_parallel_calls) of the offered
// functions (or of the named one), in the family's syntax without its leading special marker.
result<engine::grammar_builder::rule> calls_rule(engine::grammar_builder& g, const chat_dialect& dialect,
                                                 const completion_request& req, std::string* failed_param) {
  std::vector<engine::grammar_builder::rule> alternatives;
  for (std::size_t i = 0; i < req.tools.size(); ++i) {
    const auto& tool = req.tools[i];
    if (req.tool_choice == tool_choice_mode::named && tool.name != req.tool_choice_name) continue;
    auto rule = call_rule(g, dialect.tools, tool, i, failed_param);
    if (!rule) return rule;
    alternatives.push_back(*rule);
  }
  const auto one = alternatives.size() == 1 ? alternatives.front() : g.choice(std::move(alternatives));
  const bool parallel = req.parallel_tool_calls && req.tool_choice != tool_choice_mode::named;
  const std::int64_t more = parallel ? max_parallel_calls - 1 : 0;
  switch (dialect.tools) {
    case tool_syntax::hermes: {
      const auto block = g.sequence({g.literal(std::string(hermes_open) + "\n"), one, g.literal("\n" + std::string(hermes_close))});
      if (more == 0) return block;
      return g.sequence({block, g.repeat(g.sequence({g.literal("\n"), block}), 0, more)});
    }
    case tool_syntax::llama3:
      if (more == 0) return one;
      return g.sequence({one, g.repeat(g.sequence({g.literal("; "), one}), 0, more)});
    case tool_syntax::mistral:
      if (more == 0) return g.sequence({g.literal("["), one, g.literal("]")});
      return g.sequence({g.literal("["), one, g.repeat(g.sequence({g.literal(", "), one}), 0, more), g.literal("]")});
  }
  return one;
}

}  // namespace

std::string_view to_string(tool_syntax syntax) noexcept {
  switch (syntax) {
    case tool_syntax::hermes: return "hermes";
    case tool_syntax::llama3: return "llama3";
    case tool_syntax::mistral: return "mistral";
  }
  return "hermes";
}

chat_dialect chat_dialect::detect(std::string_view source) {
  chat_dialect d;
  const auto has = [&](std::string_view s) { return source.find(s) != std::string_view::npos; };
  d.template_renders_tools = has("tools");
  if (has(mistral_marker)) d.tools = tool_syntax::mistral;
  else if (has(hermes_open)) d.tools = tool_syntax::hermes;
  else if (has(python_tag) || has("ipython")) d.tools = tool_syntax::llama3;
  else d.tools = tool_syntax::hermes;
  d.reasoning = has(think_open) || has(think_close);
  return d;
}

result<chat_prompt> prepare_chat(const engine::runtime& rt, const chat_dialect& dialect, const completion_request& req,
                                 std::string* failed_param) {
  std::string ignored;
  if (!failed_param) failed_param = &ignored;
  *failed_param = "messages";
  chat_prompt prompt;
  const bool offer_tools = req.tool_choice != tool_choice_mode::none && !req.tools.empty();
  const bool describe_tools = offer_tools && !dialect.template_renders_tools;
  // Calls and results in the history are text of the Hermes format when the template cannot
  // render them.
  const bool history_as_text = !dialect.template_renders_tools;

  rapidjson::Document context(rapidjson::kObjectType);
  auto& alloc = context.GetAllocator();
  rapidjson::Value messages(rapidjson::kArrayType);
  rapidjson::Document tools;
  if (!req.tools_json.empty()) {
    auto parsed = json::parse(req.tools_json);
    if (!parsed) return std::move(parsed).err();
    tools = std::move(*parsed);
  }
  bool described = false;
  for (const auto& m : req.messages) {
    rapidjson::Value msg(rapidjson::kObjectType);
    std::string role = m.role == "developer" ? "system" : m.role;
    std::string content = m.content;
    bool content_null = m.content_null;
    if (history_as_text && m.role == "tool") {
      role = "user";
      content = "<tool_response>\n" + content + "\n</tool_response>";
    }
    if (history_as_text && !m.tool_calls.empty()) {
      for (const auto& call : m.tool_calls) {
        if (!content.empty()) content += '\n';
        content += hermes_call_text(call);
      }
      content_null = false;
    }
    if (describe_tools && !described && role == "system") {
      content += "\n\n" + tools_instructions(tools);
      described = true;
    }
    msg.AddMember("role", string_value(role, alloc), alloc);
    if (content_null) msg.AddMember("content", rapidjson::Value(rapidjson::kNullType), alloc);
    else msg.AddMember("content", string_value(content, alloc), alloc);
    if (!m.name.empty()) msg.AddMember("name", string_value(m.name, alloc), alloc);
    if (!history_as_text) {
      if (!m.tool_call_id.empty()) msg.AddMember("tool_call_id", string_value(m.tool_call_id, alloc), alloc);
      if (!m.tool_calls.empty()) {
        // Templates read arguments as a mapping (they apply tojson), as transformers passes them.
        rapidjson::Value calls(rapidjson::kArrayType);
        for (const auto& call : m.tool_calls) {
          auto args = json::parse(call.arguments);
          if (!args) return std::move(args).err();
          rapidjson::Value function(rapidjson::kObjectType);
          function.AddMember("name", string_value(call.name, alloc), alloc);
          function.AddMember("arguments", rapidjson::Value(*args, alloc), alloc);
          rapidjson::Value c(rapidjson::kObjectType);
          c.AddMember("id", string_value(call.id, alloc), alloc);
          c.AddMember("type", "function", alloc);
          c.AddMember("function", function, alloc);
          calls.PushBack(c, alloc);
        }
        msg.AddMember("tool_calls", calls, alloc);
      }
    }
    if (!m.reasoning_content.empty()) msg.AddMember("reasoning_content", string_value(m.reasoning_content, alloc), alloc);
    messages.PushBack(msg, alloc);
  }
  if (describe_tools && !described) {
    rapidjson::Value msg(rapidjson::kObjectType);
    msg.AddMember("role", "system", alloc);
    msg.AddMember("content", string_value(tools_instructions(tools), alloc), alloc);
    rapidjson::Value with_system(rapidjson::kArrayType);
    with_system.PushBack(msg, alloc);
    for (auto& m : messages.GetArray()) with_system.PushBack(m, alloc);
    messages = std::move(with_system);
  }

  if (offer_tools && dialect.template_renders_tools) context.AddMember("tools", rapidjson::Value(tools, alloc), alloc);
  if (!req.reasoning_effort.empty()) {
    if (!dialect.reasoning) {
      *failed_param = "reasoning_effort";
      return error(errc::invalid_argument, "reasoning_effort is not supported with this model (it does not reason)");
    }
    const bool thinking = req.reasoning_effort != "none" && req.reasoning_effort != "minimal";
    context.AddMember("enable_thinking", thinking, alloc);
    context.AddMember("reasoning_effort", string_value(req.reasoning_effort, alloc), alloc);
  }
  if (!req.chat_template_kwargs.empty()) {
    auto kwargs = json::parse(req.chat_template_kwargs);
    if (!kwargs) return std::move(kwargs).err();
    for (auto it = kwargs->MemberBegin(); it != kwargs->MemberEnd(); ++it) {
      context.RemoveMember(it->name);
      context.AddMember(rapidjson::Value(it->name, alloc), rapidjson::Value(it->value, alloc), alloc);
    }
  }
  const auto& vocab = rt.vocab();
  const std::string bos(vocab.bos() >= 0 ? vocab.text(vocab.bos()) : std::string_view{});
  const std::string eos(vocab.eos() >= 0 ? vocab.text(vocab.eos()) : std::string_view{});
  auto rendered = rt.chat().render_chat(messages, true, bos, eos, &context);
  if (!rendered) return std::move(rendered).err();
  prompt.text = std::move(*rendered);
  {
    std::string_view tail = prompt.text;
    while (!tail.empty() && is_space(tail.back())) tail.remove_suffix(1);
    prompt.opens_in_reasoning = dialect.reasoning && tail.ends_with(think_open);
  }
  prompt.parse_tools = offer_tools;

  // The grammar: a forced call, a JSON answer, or either when tools stay optional.
  const bool forced = offer_tools && (req.tool_choice == tool_choice_mode::required || req.tool_choice == tool_choice_mode::named);
  const bool json_answer = req.response_format != response_format_type::text;
  if (!forced && !json_answer) return prompt;
  engine::grammar_builder g;
  std::vector<engine::grammar_builder::rule> parts;
  if (prompt.opens_in_reasoning) parts.push_back(g.literal(std::string(think_close) + "\n\n"));
  engine::grammar_builder::rule answer = 0;
  if (json_answer) {
    if (req.response_format == response_format_type::json_object) {
      answer = g.any_json_object();
    } else {
      auto schema = json::parse(req.response_schema);
      if (!schema) return std::move(schema).err();
      auto compiled = g.json_schema(*schema, "response_format.json_schema.schema");
      if (!compiled) {
        *failed_param = "response_format";
        return std::move(compiled).err();
      }
      answer = *compiled;
    }
  }
  if (offer_tools && (forced || json_answer)) {
    auto calls = calls_rule(g, dialect, req, failed_param);
    if (!calls) return std::move(calls).err();
    answer = forced ? *calls : g.choice({*calls, answer});
  }
  parts.push_back(answer);
  prompt.grammar = g.build(parts.size() == 1 ? parts.front() : g.sequence(std::move(parts)));
  return prompt;
}

std::string new_tool_call_id() {
  static constexpr char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  thread_local std::mt19937_64 rng{std::random_device{}()};
  std::uniform_int_distribution<std::size_t> pick(0, sizeof(alphabet) - 2);
  std::string out = "call_";
  for (int i = 0; i < 24; ++i) out += alphabet[pick(rng)];
  return out;
}

output_parser::output_parser(const chat_dialect& dialect, bool opens_in_reasoning, std::vector<std::string> tools,
                             bool forced, bool parallel)
    : dialect_(dialect), tools_(std::move(tools)), forced_(forced), parallel_(parallel),
      mode_(opens_in_reasoning ? mode::reasoning : mode::start) {}

parsed_delta output_parser::push(std::string_view text) {
  parsed_delta out;
  buffer_ += text;
  step(out, false);
  return out;
}

parsed_delta output_parser::finish() {
  parsed_delta out;
  step(out, true);
  if (calls_ > 0 && blank(out.content)) out.content.clear();
  return out;
}

bool output_parser::offered(std::string_view name) const {
  return std::find(tools_.begin(), tools_.end(), name) != tools_.end();
}

void output_parser::add_call(std::string name, std::string arguments, parsed_delta& out) {
  if (!parallel_ && calls_ > 0) return;
  parsed_tool_call p;
  p.index = calls_++;
  p.call.id = new_tool_call_id();
  p.call.name = std::move(name);
  p.call.arguments = std::move(arguments);
  out.calls.push_back(std::move(p));
}

// Reads one payload: a call object, a list of them, or calls separated by ';'. Adds them all
// when every one is a well-formed call of an offered function; otherwise nothing.
bool output_parser::take_calls(std::string_view payload, parsed_delta& out) {
  std::vector<std::pair<std::string, std::string>> found;
  const auto read_object = [&](const rapidjson::Value& v) {
    if (!v.IsObject() || !v.HasMember("name") || !v["name"].IsString()) return false;
    const std::string name = v["name"].GetString();
    if (!offered(name)) return false;
    const rapidjson::Value* args = nullptr;
    if (v.HasMember("arguments")) args = &v["arguments"];
    else if (v.HasMember("parameters")) args = &v["parameters"];
    std::string text = "{}";
    if (args && args->IsObject()) {
      text = json::to_string(*args);
    } else if (args && args->IsString()) {
      auto inner = json::parse(std::string_view(args->GetString(), args->GetStringLength()));
      if (!inner || !inner->IsObject()) return false;
      text = json::to_string(*inner);
    } else if (args && !args->IsNull()) {
      return false;
    }
    found.emplace_back(name, std::move(text));
    return true;
  };
  const auto read_value = [&](std::string_view text) {
    auto doc = json::parse(trim(text));
    if (!doc) return false;
    if (doc->IsArray()) {
      if (doc->Empty()) return false;
      for (const auto& item : doc->GetArray())
        if (!read_object(item)) return false;
      return true;
    }
    return read_object(*doc);
  };
  if (!read_value(payload)) {
    found.clear();
    // Llama 3.x writes parallel calls separated by ';'.
    if (dialect_.tools != tool_syntax::llama3 || payload.find(';') == std::string_view::npos) return false;
    std::size_t begin = 0;
    while (begin <= payload.size()) {
      auto end = payload.find(';', begin);
      if (end == std::string_view::npos) end = payload.size();
      if (!read_value(payload.substr(begin, end - begin))) return false;
      begin = end + 1;
    }
  }
  for (auto& [name, args] : found) add_call(std::move(name), std::move(args), out);
  return true;
}

void output_parser::step(parsed_delta& out, bool at_end) {
  const bool tools = !tools_.empty();
  while (true) {
    switch (mode_) {
      case mode::start: {
        const auto lead = trim_left(buffer_);
        if (lead.empty()) {
          if (!at_end) return;
          if (!after_reasoning_) out.content += buffer_;
          buffer_.clear();
          return;
        }
        const auto starts = [&](std::string_view marker) { return lead.starts_with(marker); };
        const auto maybe = [&](std::string_view marker) {
          return !at_end && lead.size() < marker.size() && marker.starts_with(lead);
        };
        if (dialect_.reasoning && !after_reasoning_) {
          if (starts(think_open)) {
            buffer_ = std::string(lead.substr(think_open.size()));
            mode_ = mode::reasoning;
            continue;
          }
          if (maybe(think_open)) return;
        }
        if (tools && dialect_.tools == tool_syntax::llama3) {
          if (starts(python_tag)) {
            marker_ = python_tag;
            buffer_ = std::string(lead.substr(python_tag.size()));
            mode_ = mode::payload;
            continue;
          }
          if (maybe(python_tag)) return;
          if (lead.front() == '{') {
            buffer_ = std::string(lead);
            mode_ = mode::payload;
            continue;
          }
        }
        if (tools && dialect_.tools == tool_syntax::mistral) {
          if (starts(mistral_marker)) {
            marker_ = mistral_marker;
            buffer_ = std::string(lead.substr(mistral_marker.size()));
            mode_ = mode::payload;
            continue;
          }
          if (maybe(mistral_marker)) return;
          if (forced_ && lead.front() == '[') {
            buffer_ = std::string(lead);
            mode_ = mode::payload;
            continue;
          }
        }
        if (after_reasoning_) buffer_ = std::string(lead);
        after_reasoning_ = false;
        mode_ = mode::content;
        continue;
      }
      case mode::reasoning: {
        const auto pos = buffer_.find(think_close);
        if (pos != std::string::npos) {
          out.reasoning.append(buffer_, 0, pos);
          buffer_.erase(0, pos + think_close.size());
          mode_ = mode::start;
          after_reasoning_ = true;
          continue;
        }
        const auto keep = at_end ? 0 : partial_suffix(buffer_, think_close);
        out.reasoning.append(buffer_, 0, buffer_.size() - keep);
        buffer_.erase(0, buffer_.size() - keep);
        return;
      }
      case mode::content: {
        std::string_view marker;
        if (tools && dialect_.tools == tool_syntax::hermes) marker = hermes_open;
        if (tools && dialect_.tools == tool_syntax::mistral) marker = mistral_marker;
        if (marker.empty()) {
          out.content += buffer_;
          buffer_.clear();
          return;
        }
        const auto pos = buffer_.find(marker);
        if (pos != std::string::npos) {
          const std::string_view before(buffer_.data(), pos);
          if (!(calls_ > 0 && blank(before))) out.content += before;
          buffer_.erase(0, pos + marker.size());
          mode_ = marker == hermes_open ? mode::hermes_call : mode::payload;
          marker_ = marker;
          continue;
        }
        const auto keep = at_end ? 0 : partial_suffix(buffer_, marker);
        // Between two calls, blank text waits: it is dropped when another call follows.
        if (calls_ > 0 && !at_end && blank(std::string_view(buffer_).substr(0, buffer_.size() - keep))) return;
        out.content.append(buffer_, 0, buffer_.size() - keep);
        buffer_.erase(0, buffer_.size() - keep);
        return;
      }
      case mode::hermes_call: {
        const auto pos = buffer_.find(hermes_close);
        if (pos != std::string::npos) {
          const std::string payload = buffer_.substr(0, pos);
          if (!take_calls(payload, out)) out.content += std::string(hermes_open) + payload + std::string(hermes_close);
          buffer_.erase(0, pos + hermes_close.size());
          mode_ = mode::content;
          continue;
        }
        if (!at_end) return;
        if (!take_calls(buffer_, out)) out.content += std::string(hermes_open) + buffer_;
        buffer_.clear();
        return;
      }
      case mode::payload: {
        if (!at_end) return;
        if (!take_calls(buffer_, out)) out.content += marker_ + buffer_;
        buffer_.clear();
        return;
      }
    }
  }
}

}  // namespace chatai::serve
