// How one model's chat template speaks tools and reasoning, and the two directions of it: a
// chat request rendered into the prompt (tools offered, tool calls and results in the
// history), and the model's output parsed back into content, reasoning_content and tool calls.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "chatai/core/status.hpp"
#include "chatai/engine/grammar.hpp"
#include "chatai/engine/runtime.hpp"
#include "chatai/serve/openai_protocol.hpp"

namespace chatai::serve {

// The way a model family writes its tool calls.
enum class tool_syntax {
  hermes,   // <tool_call>{"name":...,"arguments":{...}}</tool_call>, one block per call (Qwen, Hermes, SmolLM3)
  llama3,   // {"name":...,"parameters":{...}}, optionally after <|python_tag|>, calls separated by ';'
  mistral,  // [TOOL_CALLS][{"name":...,"arguments":{...}}, ...]
};

std::string_view to_string(tool_syntax syntax) noexcept;

// What a template shows about the model. Thread safety: a value type.
struct chat_dialect {
  tool_syntax tools = tool_syntax::hermes;
  // The template renders `tools` itself; otherwise chatai describes them in the system message
  // and writes calls and results of the history as the Hermes format's text.
  bool template_renders_tools = false;
  bool reasoning = false;  // the template knows <think>...</think>

  static chat_dialect detect(std::string_view template_source);
};

// A chat request rendered for the model.
struct chat_prompt {
  std::string text;
  bool opens_in_reasoning = false;  // the prompt ends inside <think>: the output starts as reasoning
  bool parse_tools = false;         // the model was offered tools: its output is parsed for calls
  std::shared_ptr<const engine::grammar> grammar;  // the constraint on the output, or null
};

// Renders `req` through the runtime's template and builds the grammar its tool_choice and
// response_format ask for. Errors: invalid_argument naming the field (a schema the grammar
// compiler refuses names its path, such as "response_format.json_schema.schema.properties.x";
// reasoning_effort for a model without reasoning); `failed_param` then holds the request field
// to name ("messages" for a template error).
result<chat_prompt> prepare_chat(const engine::runtime& rt, const chat_dialect& dialect, const completion_request& req,
                                 std::string* failed_param = nullptr);

// One call as it appears in the stream: complete when it is reported.
struct parsed_tool_call {
  std::size_t index = 0;  // among this choice's calls
  tool_call call;
};

// What a piece of output turned into.
struct parsed_delta {
  std::string reasoning;
  std::string content;
  std::vector<parsed_tool_call> calls;

  bool empty() const noexcept { return reasoning.empty() && content.empty() && calls.empty(); }
};

// Splits streamed output into reasoning, content and tool calls. Text that may still turn into
// a marker (the start of "<tool_call>" or "</think>") is held back until it is known; a call is
// reported once it is whole. Output that looked like a call but does not parse as one, or names
// a function that was not offered, is content: nothing the model wrote is lost.
// Thread safety: not thread-safe; one parser per choice.
class output_parser {
 public:
  // `tools`: the offered functions' names, empty when no call is parsed; `forced`: the grammar
  // made the output a call payload (for llama3 and mistral, without its leading marker).
  output_parser(const chat_dialect& dialect, bool opens_in_reasoning, std::vector<std::string> tools, bool forced,
                bool parallel);

  parsed_delta push(std::string_view text);
  parsed_delta finish();

  std::size_t calls() const noexcept { return calls_; }

 private:
  enum class mode { start, reasoning, content, hermes_call, payload };

  void step(parsed_delta& out, bool at_end);
  bool take_calls(std::string_view payload, parsed_delta& out);
  void add_call(std::string name, std::string arguments, parsed_delta& out);
  bool offered(std::string_view name) const;

  chat_dialect dialect_;
  std::vector<std::string> tools_;
  bool forced_ = false;
  bool parallel_ = true;
  mode mode_ = mode::start;
  bool after_reasoning_ = false;  // content that follows </think> loses its leading blank lines
  std::string buffer_;
  std::string marker_;  // the marker that opened the payload, given back when it is no call
  std::size_t calls_ = 0;
};

// "call_" and 24 random letters and digits.
std::string new_tool_call_id();

}  // namespace chatai::serve
