// The OpenAI request and error shapes that `chatai serve` accepts and answers: strict types
// for the fields it knows, unknown fields that clients commonly send accepted and ignored.
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

struct chat_message {
  std::string role;  // system, user, assistant, tool or developer
  std::string content;
};

// One /v1/chat/completions or /v1/completions request, validated.
struct completion_request {
  bool chat = true;
  std::string model;
  std::vector<chat_message> messages;  // chat
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
