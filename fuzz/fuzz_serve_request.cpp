// libFuzzer target: the model server's reading of request bodies on arbitrary bytes (chat and
// completions, with the limits of a real vocabulary), and the error body made of a refusal.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "chatai/core/json.hpp"
#include "chatai/serve/openai_protocol.hpp"

namespace {

void check(const chatai::result<chatai::serve::completion_request>& parsed, const chatai::serve::request_limits& limits) {
  if (parsed) {
    // What passed must satisfy what the server relies on later.
    if (parsed->n < 1 || parsed->n > limits.max_n) std::abort();
    if (static_cast<std::int64_t>(parsed->stop.size()) > limits.max_stop) std::abort();
    if (parsed->top_logprobs < 0 || parsed->top_logprobs > limits.max_top_logprobs) std::abort();
    return;
  }
  // Every refusal becomes a well-formed OpenAI error body.
  const auto err = chatai::serve::to_api_error(parsed.err());
  if (err.http_status < 400 || err.http_status > 499) std::abort();
  auto body = chatai::json::parse(err.to_json());
  if (!body || !body->IsObject() || !body->HasMember("error")) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  chatai::serve::request_limits limits;
  limits.vocab_size = 49152;
  check(chatai::serve::parse_chat_request(input, limits), limits);
  check(chatai::serve::parse_completion_request(input, limits), limits);
  return 0;
}
