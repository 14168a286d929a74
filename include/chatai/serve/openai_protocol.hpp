// The OpenAI request and error shapes that `chatai serve` accepts and answers: strict types
// for the fields it knows. A field is honoured or refused with a 400 that names it, never
// dropped: an unknown field is "Unrecognized request argument supplied", as OpenAI answers.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "chatai/core/status.hpp"
#include "chatai/engine/sampler.hpp"

namespace chatai::serve {

// An error as the OpenAI API reports it: {"error":{"message","type","param","code"}}.
struct api_error {
  int http_status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;  // empty: null
  std::string code;   // empty: null

  std::string to_json() const;
};

api_error invalid_request(std::string message, std::string param = {});

// A function call of an assistant message (history) or of an answer.
struct tool_call {
  std::string id;         // "call_..."
  std::string name;
  std::string arguments;  // JSON text, as OpenAI sends and returns it
};

struct chat_message {
  std::string role;  // system, user, assistant, tool or developer
  std::string content;
  bool content_null = false;           // assistant messages with tool calls may have none
  std::string name;                    // optional participant name
  std::string tool_call_id;            // tool messages: the call they answer
  std::vector<tool_call> tool_calls;   // assistant messages
  std::string reasoning_content;       // assistant messages of reasoning models, for their templates
};

// A function the model may call: {"type":"function","function":{name,description,parameters,strict}}.
struct tool_definition {
  std::string name;
  std::string description;
  std::string parameters;  // a JSON schema as JSON text; "" when absent (any arguments object)
  bool strict = false;
};

enum class tool_choice_mode { none, auto_, required, named };

// response_format: text, json_object or json_schema.
enum class response_format_type { text, json_object, json_schema };

// One /v1/chat/completions or /v1/completions request, validated.
struct completion_request {
  bool chat = true;
  std::string model;
  std::vector<chat_message> messages;  // chat
  std::vector<tool_definition> tools;
  std::string tools_json;              // the "tools" array as sent, for the chat template
  tool_choice_mode tool_choice = tool_choice_mode::auto_;  // none when there are no tools
  std::string tool_choice_name;        // named
  bool parallel_tool_calls = true;
  response_format_type response_format = response_format_type::text;
  std::string response_schema;         // json_schema: the schema as JSON text
  std::string reasoning_effort;        // "", or minimal, low, medium, high (none as minimal)
  std::string chat_template_kwargs;    // a JSON object of extra template variables, or ""
  std::string prompt;                  // completions
  bool echo = false;                   // completions: the prompt is put before the text
  std::optional<std::int64_t> max_tokens;
  engine::sampling_params sampling;
  std::vector<std::string> stop;
  std::int64_t n = 1;
  bool logprobs = false;
  std::int64_t top_logprobs = 0;
  bool stream = false;
  bool include_usage = false;
  std::string user;
};

struct request_limits {
  std::int64_t max_n = 16;
  std::int64_t max_stop = 16;
  std::int64_t max_top_logprobs = 20;
  std::int32_t vocab_size = 0;  // for logit_bias; 0 skips that check
};

// Parses and validates a request body. Errors name the parameter.
result<completion_request> parse_chat_request(std::string_view body, const request_limits& limits);
result<completion_request> parse_completion_request(std::string_view body, const request_limits& limits);

// The api_error for a failed parse (its message and the parameter it names).
api_error to_api_error(const error& err);

}  // namespace chatai::serve
