// One streamed generation over a runtime: a prompt (plain text or chat messages) in, text
// pieces out one call at a time. The C ABI and the Python module stream through it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <rapidjson/document.h>

#include "chatai/core/status.hpp"
#include "chatai/engine/generator.hpp"
#include "chatai/engine/runtime.hpp"
#include "chatai/engine/sampler.hpp"

namespace chatai::engine {

// Renders `messages` (a JSON array of message objects, every key passed on to the template)
// through the runtime's chat template, with the vocabulary's BOS and EOS texts. Errors: those
// of chat_template::render_chat.
result<std::string> render_messages(const runtime& rt, const rapidjson::Value& messages, bool add_generation_prompt);

// The same for messages given as JSON text. Errors: parse_error for malformed JSON,
// invalid_argument when it is not an array, and those of render_messages.
result<std::string> render_messages_json(const runtime& rt, std::string_view messages_json,
                                         bool add_generation_prompt);

struct completion_request {
  std::string prompt;    // plain text, or a prompt rendered from chat messages
  bool is_chat = false;  // read the prompt's special tokens (<|im_start|>) as those tokens
  sampling_params sampling;
  std::vector<std::string> stop;  // generation ends before any of these; they are never emitted
  std::int64_t max_tokens = 256;
};

// Thread safety: not thread-safe. It drives the runtime's backend, which has one driver at a
// time: the caller keeps next() calls of every completion on one runtime from overlapping.
class completion {
 public:
  // Encodes the prompt and starts its sequence. Errors: those of generator::add
  // (invalid_argument for bad sampling parameters, out_of_range for a prompt longer than the
  // context, resource_exhausted).
  static result<std::unique_ptr<completion>> start(runtime& rt, completion_request request);

  // Steps until there is new text or the generation ends, and returns that text; "" only once
  // done(). Errors: the backend's; the generation is then over and reason() reads cancelled.
  result<std::string> next();

  bool done() const noexcept { return reason_ != finish_reason::none; }
  // Why the generation ended: stop (EOS or a stop string) or length; none while it runs.
  finish_reason reason() const noexcept { return reason_; }
  std::int64_t prompt_tokens() const noexcept { return prompt_tokens_; }
  std::int64_t completion_tokens() const noexcept { return completion_tokens_; }

 private:
  explicit completion(runtime& rt);

  generator generator_;
  finish_reason reason_ = finish_reason::none;
  std::int64_t prompt_tokens_ = 0;
  std::int64_t completion_tokens_ = 0;
};

}  // namespace chatai::engine
