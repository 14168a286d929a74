// The JSON that `chatai serve` answers with, in OpenAI's shapes: whole chat and text
// completions, their stream chunks, usage and log-probabilities.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "chatai/engine/generator.hpp"
#include "chatai/engine/vocabulary.hpp"
#include "chatai/serve/openai_protocol.hpp"

namespace chatai::serve {

// What every object of one answer repeats.
struct response_meta {
  std::string id;            // "chatcmpl-..." or "cmpl-..."
  std::int64_t created = 0;  // Unix seconds
  std::string model;
  bool chat = true;  // chat.completion(.chunk) or text_completion
};

struct usage {
  std::int64_t prompt_tokens = 0;
  std::int64_t completion_tokens = 0;
  std::int64_t cached_tokens = 0;  // prompt tokens whose KV came from a cache
};

struct choice_result {
  std::string text;
  engine::finish_reason finish = engine::finish_reason::stop;
  std::string logprobs;                // a JSON object from logprobs_json; empty: null
  std::string reasoning;               // chat: reasoning_content, omitted when empty
  std::vector<tool_call> tool_calls;   // chat: the message's tool_calls; content is null when text is empty
};

// The finish_reason of a choice: "tool_calls" when it made calls (unless max_tokens cut it:
// "length"), else the engine's reason.
std::string_view finish_reason_name(engine::finish_reason finish, bool made_calls) noexcept;

// The log-probabilities of `tokens` as a JSON object: {"content":[{"token","logprob","bytes",
// "top_logprobs"}]} for chat, {"tokens","token_logprobs","top_logprobs","text_offset"} for
// completions, whose offsets start at `text_offset` and leave it after the last token.
std::string logprobs_json(bool chat, const engine::vocabulary& vocab, std::span<const engine::generated_token> tokens,
                          std::size_t& text_offset);

// A non-streaming answer with every choice and the usage.
std::string final_response(const response_meta& meta, const std::vector<choice_result>& choices, const usage& u);

// Stream chunks. The opening one of a choice: the assistant role for chat, the echoed prompt
// for completions (empty string: nothing to send). `with_usage` adds "usage":null, as OpenAI
// does when stream_options.include_usage is set.
std::string stream_start_chunk(const response_meta& meta, std::size_t index, bool with_usage, std::string_view echo);
std::string stream_delta_chunk(const response_meta& meta, std::size_t index, std::string_view text,
                               std::string_view logprobs, bool with_usage);
// The reasoning_content delta of a chat choice.
std::string stream_reasoning_chunk(const response_meta& meta, std::size_t index, std::string_view text, bool with_usage);
// A whole tool call as OpenAI streams one: a chunk with its index, id, type, name and empty
// arguments, then one with the arguments.
std::vector<std::string> stream_tool_call_chunks(const response_meta& meta, std::size_t index, std::size_t call_index,
                                                 const tool_call& call, bool with_usage);
std::string stream_finish_chunk(const response_meta& meta, std::size_t index, std::string_view finish_reason,
                                bool with_usage);
// The last chunk before [DONE] when include_usage is set: no choices, the usage.
std::string stream_usage_chunk(const response_meta& meta, const usage& u);

}  // namespace chatai::serve
