// Tests of the output parser (content, reasoning_content and tool calls out of streamed text)
// and of dialect detection from chat templates.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "chatai/core/json.hpp"
#include "chatai/serve/chat_format.hpp"

using namespace chatai;
using namespace chatai::serve;

namespace {

chat_dialect dialect(tool_syntax syntax, bool reasoning = false) {
  chat_dialect d;
  d.tools = syntax;
  d.template_renders_tools = true;
  d.reasoning = reasoning;
  return d;
}

// Feeds `text` in pieces of `piece` bytes and gathers everything the parser produced.
parsed_delta feed(output_parser& p, std::string_view text, std::size_t piece) {
  parsed_delta all;
  const auto take = [&](parsed_delta d) {
    all.reasoning += d.reasoning;
    all.content += d.content;
    for (auto& c : d.calls) all.calls.push_back(std::move(c));
  };
  for (std::size_t i = 0; i < text.size(); i += piece) take(p.push(text.substr(i, piece)));
  take(p.finish());
  return all;
}

std::string arg(const tool_call& c, const char* key) {
  auto doc = json::parse(c.arguments);
  REQUIRE(doc);
  REQUIRE(doc->IsObject());
  return json::to_string((*doc)[key]);
}

}  // namespace

TEST_CASE("dialects are read off the templates") {
  CHECK(chat_dialect::detect("{{ '<tool_call>' }} {% if tools %}{% endif %}").tools == tool_syntax::hermes);
  CHECK(chat_dialect::detect("{% if tools %}[TOOL_CALLS]{% endif %}").tools == tool_syntax::mistral);
  CHECK(chat_dialect::detect("{% if tools %}<|python_tag|>{% endif %}").tools == tool_syntax::llama3);
  const auto plain = chat_dialect::detect("{% for m in messages %}{{ m.content }}{% endfor %}");
  CHECK_FALSE(plain.template_renders_tools);
  CHECK_FALSE(plain.reasoning);
  CHECK(chat_dialect::detect("{{ '<think>\\n' }}").reasoning);
}

TEST_CASE("plain content passes through whatever the pieces") {
  for (std::size_t piece : {1u, 3u, 100u}) {
    output_parser p(dialect(tool_syntax::hermes), false, {"get_weather"}, false, true);
    const auto out = feed(p, "It is <b>sunny</b> < today", piece);
    CHECK(out.content == "It is <b>sunny</b> < today");
    CHECK(out.calls.empty());
  }
}

TEST_CASE("hermes calls are parsed, content before them kept, blanks between dropped") {
  const std::string text =
      "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n"
      "<tool_call>\n{\"name\": \"get_time\", \"arguments\": \"{\\\"zone\\\": \\\"CET\\\"}\"}\n</tool_call>\n";
  for (std::size_t piece : {1u, 2u, 7u, 1000u}) {
    output_parser p(dialect(tool_syntax::hermes), false, {"get_weather", "get_time"}, false, true);
    const auto out = feed(p, text, piece);
    CHECK(out.content == "Let me check.\n");
    REQUIRE(out.calls.size() == 2);
    CHECK(out.calls[0].index == 0);
    CHECK(out.calls[0].call.name == "get_weather");
    CHECK(arg(out.calls[0].call, "city") == "\"Paris\"");
    CHECK(out.calls[1].index == 1);
    CHECK(out.calls[1].call.name == "get_time");
    CHECK(arg(out.calls[1].call, "zone") == "\"CET\"");
    CHECK(out.calls[0].call.id.rfind("call_", 0) == 0);
    CHECK(out.calls[0].call.id != out.calls[1].call.id);
    CHECK(p.calls() == 2);
  }
}

TEST_CASE("a call that does not parse or names an unknown function stays content") {
  output_parser p(dialect(tool_syntax::hermes), false, {"get_weather"}, false, true);
  const auto out = feed(p, "<tool_call>{\"name\": \"rm_rf\", \"arguments\": {}}</tool_call> and <tool_call>{oops", 4);
  CHECK(out.calls.empty());
  CHECK(out.content == "<tool_call>{\"name\": \"rm_rf\", \"arguments\": {}}</tool_call> and <tool_call>{oops");
}

TEST_CASE("parallel_tool_calls false keeps the first call") {
  output_parser p(dialect(tool_syntax::hermes), false, {"f"}, false, false);
  const auto out = feed(p, "<tool_call>{\"name\":\"f\",\"arguments\":{\"a\":1}}</tool_call><tool_call>{\"name\":\"f\",\"arguments\":{\"a\":2}}</tool_call>", 5);
  REQUIRE(out.calls.size() == 1);
  CHECK(arg(out.calls[0].call, "a") == "1");
}

TEST_CASE("llama 3 JSON calls, with and without python_tag, and ';' between calls") {
  {
    output_parser p(dialect(tool_syntax::llama3), false, {"f", "g"}, false, true);
    const auto out = feed(p, "{\"name\": \"f\", \"parameters\": {\"x\": \"1\"}}; {\"name\": \"g\", \"parameters\": {}}", 3);
    REQUIRE(out.calls.size() == 2);
    CHECK(out.calls[0].call.name == "f");
    CHECK(out.calls[1].call.arguments == "{}");
    CHECK(out.content.empty());
  }
  {
    output_parser p(dialect(tool_syntax::llama3), false, {"f"}, false, true);
    const auto out = feed(p, "<|python_tag|>{\"name\": \"f\", \"parameters\": {\"x\": 2}}", 1);
    REQUIRE(out.calls.size() == 1);
    CHECK(arg(out.calls[0].call, "x") == "2");
  }
  {
    output_parser p(dialect(tool_syntax::llama3), false, {"f"}, false, true);
    const auto out = feed(p, "{\"answer\": 42}", 2);
    CHECK(out.calls.empty());
    CHECK(out.content == "{\"answer\": 42}");
  }
}

TEST_CASE("mistral calls after [TOOL_CALLS], and a forced payload without the marker") {
  {
    output_parser p(dialect(tool_syntax::mistral), false, {"f"}, false, true);
    const auto out = feed(p, "[TOOL_CALLS][{\"name\": \"f\", \"arguments\": {\"q\": \"a b\"}}]", 4);
    REQUIRE(out.calls.size() == 1);
    CHECK(arg(out.calls[0].call, "q") == "\"a b\"");
  }
  {
    output_parser p(dialect(tool_syntax::mistral), false, {"f"}, true, true);
    const auto out = feed(p, "[{\"name\": \"f\", \"arguments\": {}}, {\"name\": \"f\", \"arguments\": {\"k\": true}}]", 6);
    REQUIRE(out.calls.size() == 2);
    CHECK(arg(out.calls[1].call, "k") == "true");
  }
}

TEST_CASE("reasoning goes to its own field, streamed as it comes") {
  for (std::size_t piece : {1u, 4u, 1000u}) {
    output_parser p(dialect(tool_syntax::hermes, true), false, {}, false, true);
    const auto out = feed(p, "<think>\nLet me think: 2+2.\n</think>\n\nIt is 4.", piece);
    CHECK(out.reasoning == "\nLet me think: 2+2.\n");
    CHECK(out.content == "It is 4.");
  }
  // A prompt that opens the thinking block: the output starts as reasoning.
  output_parser opened(dialect(tool_syntax::hermes, true), true, {}, false, true);
  auto first = opened.push("Hmm, the user wants </thi");
  CHECK(first.reasoning == "Hmm, the user wants ");
  CHECK(first.content.empty());
  auto rest = opened.push("nk>Answer");
  CHECK(rest.reasoning.empty());
  auto tail = opened.finish();
  CHECK(rest.content + tail.content == "Answer");
  // Without a reasoning template, <think> is just text.
  output_parser plain(dialect(tool_syntax::hermes, false), false, {}, false, true);
  CHECK(feed(plain, "<think>x</think>y", 3).content == "<think>x</think>y");
}

TEST_CASE("reasoning then a tool call") {
  output_parser p(dialect(tool_syntax::hermes, true), true, {"f"}, false, true);
  const auto out = feed(p, "I should call f.</think>\n\n<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>", 3);
  CHECK(out.reasoning == "I should call f.");
  CHECK(out.content.empty());
  REQUIRE(out.calls.size() == 1);
}

TEST_CASE("an unterminated reasoning block is all reasoning") {
  output_parser p(dialect(tool_syntax::hermes, true), true, {}, false, true);
  const auto out = feed(p, "still thinking </th", 2);
  CHECK(out.reasoning == "still thinking </th");
  CHECK(out.content.empty());
}

// ---- prompts through real templates, on the real model's vocabulary ----

#include <fstream>
#include <iterator>

namespace {

std::string read_template(const std::string& name) {
  std::ifstream in(std::string(CHATAI_SHARED_DIR) + "/testdata/templates/" + name + ".jinja", std::ios::binary);
  REQUIRE(in);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::unique_ptr<engine::runtime> load_with(const std::string& template_source) {
  engine::runtime_options o;
  o.model_path = CHATAI_TEST_MODEL;
  o.device = "cpu";
  o.threads = 1;
  o.chat_template = template_source;
  auto rt = engine::runtime::load(o);
  REQUIRE(rt);
  return std::move(*rt);
}

completion_request history_request() {
  auto r = parse_chat_request(R"({"model": "m", "messages": [
      {"role": "user", "content": "Weather in Paris?"},
      {"role": "assistant", "content": null, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
      {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 25 C"}],
    "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Current weather",
               "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
  })", request_limits{});
  REQUIRE(r);
  return std::move(*r);
}

}  // namespace

TEST_CASE("a Hermes template renders the tools, the call and its result") {
  auto rt = load_with(read_template("Qwen-Qwen2.5-7B-Instruct"));
  const auto d = chat_dialect::detect(rt->chat().source());
  CHECK(d.tools == tool_syntax::hermes);
  CHECK(d.template_renders_tools);
  auto p = prepare_chat(*rt, d, history_request());
  REQUIRE(p);
  CHECK(p->parse_tools);
  CHECK_FALSE(p->grammar);
  CHECK(p->text.find("<tools>") != std::string::npos);
  CHECK(p->text.find("\"name\": \"get_weather\"") != std::string::npos);
  CHECK(p->text.find("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>") !=
        std::string::npos);
  CHECK(p->text.find("<tool_response>\nsunny, 25 C\n</tool_response>") != std::string::npos);
}

TEST_CASE("a template without tools gets them described and the history as text") {
  auto rt = load_with("");  // the model's own ChatML template, which knows no tools
  const auto d = chat_dialect::detect(rt->chat().source());
  CHECK_FALSE(d.template_renders_tools);
  auto p = prepare_chat(*rt, d, history_request());
  REQUIRE(p);
  CHECK(p->text.rfind("<|im_start|>system\n# Tools", 0) == 0);
  CHECK(p->text.find("{\"type\":\"function\",\"function\":{\"name\":\"get_weather\"") != std::string::npos);
  CHECK(p->text.find("<|im_start|>assistant\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>") !=
        std::string::npos);
  CHECK(p->text.find("<|im_start|>user\n<tool_response>\nsunny, 25 C\n</tool_response>") != std::string::npos);
}

TEST_CASE("Llama 3.1 and Mistral templates render calls with arguments as objects") {
  {
    auto rt = load_with(read_template("meta-llama-Llama-3.1-8B-Instruct"));
    const auto d = chat_dialect::detect(rt->chat().source());
    CHECK(d.tools == tool_syntax::llama3);
    auto p = prepare_chat(*rt, d, history_request());
    REQUIRE(p);
    CHECK(p->text.find("{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}") != std::string::npos);
    CHECK(p->text.find("<|start_header_id|>ipython<|end_header_id|>") != std::string::npos);
  }
  {
    auto rt = load_with(read_template("mistralai-Mistral-Nemo-Instruct-2407"));
    const auto d = chat_dialect::detect(rt->chat().source());
    CHECK(d.tools == tool_syntax::mistral);
    auto req = history_request();
    req.messages[1].tool_calls[0].id = "abcdefghi";  // Mistral's templates want 9-character ids
    req.messages[2].tool_call_id = "abcdefghi";
    auto p = prepare_chat(*rt, d, req);
    REQUIRE(p);
    CHECK(p->text.find("[TOOL_CALLS]") != std::string::npos);
    CHECK(p->text.find("[AVAILABLE_TOOLS]") != std::string::npos);
    CHECK(p->text.find("\"city\": \"Paris\"") != std::string::npos);
  }
}

TEST_CASE("forced tool choices and JSON answers come with a grammar") {
  auto rt = load_with(read_template("Qwen-Qwen2.5-7B-Instruct"));
  const auto d = chat_dialect::detect(rt->chat().source());
  auto req = history_request();
  req.tool_choice = tool_choice_mode::required;
  auto p = prepare_chat(*rt, d, req);
  REQUIRE(p);
  REQUIRE(p->grammar);
  engine::grammar_matcher m(p->grammar, std::make_shared<const engine::token_table>(rt->vocab()));
  CHECK(m.accept_bytes("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Rome\"}}\n</tool_call>"));
  CHECK(m.complete());
  engine::grammar_matcher wrong(p->grammar, std::make_shared<const engine::token_table>(rt->vocab()));
  CHECK_FALSE(wrong.accept_bytes("Sure! <tool_call>"));

  req.tool_choice = tool_choice_mode::none;
  req.response_format = response_format_type::json_schema;
  req.response_schema = R"({"type": "object", "properties": {"x": {"not": {}}}})";
  std::string param;
  auto refused = prepare_chat(*rt, d, req, &param);
  REQUIRE_FALSE(refused);
  CHECK(param == "response_format");
  CHECK(refused.err().message().find("response_format.json_schema.schema.properties.x") != std::string::npos);
}

TEST_CASE("reasoning templates: the prompt may open the thinking block; reasoning_effort elsewhere is refused") {
  auto rt = load_with(read_template("deepseek-ai-DeepSeek-R1-Distill-Llama-8B"));
  const auto d = chat_dialect::detect(rt->chat().source());
  CHECK(d.reasoning);
  auto req = parse_chat_request(R"({"model": "m", "messages": [{"role": "user", "content": "2+2?"}], "reasoning_effort": "low"})",
                                request_limits{});
  REQUIRE(req);
  auto p = prepare_chat(*rt, d, *req);
  REQUIRE(p);
  CHECK(p->opens_in_reasoning);
  auto plain = load_with("");
  std::string param;
  auto refused = prepare_chat(*plain, chat_dialect::detect(plain->chat().source()), *req, &param);
  REQUIRE_FALSE(refused);
  CHECK(param == "reasoning_effort");
}
