// libFuzzer target: the model server's reading of request bodies on arbitrary bytes (chat,
// completions and embeddings, with the limits of a real vocabulary), and the error body made of
// a refusal.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "chatai/core/json.hpp"
#include "chatai/serve/embeddings.hpp"
#include "chatai/serve/openai_protocol.hpp"

namespace {

// Every refusal becomes a well-formed OpenAI error body.
void check_refusal(const chatai::error& refusal) {
  const auto err = chatai::serve::to_api_error(refusal);
  if (err.http_status < 400 || err.http_status > 499) std::abort();
  auto body = chatai::json::parse(err.to_json());
  if (!body || !body->IsObject() || !body->HasMember("error")) std::abort();
}

void check(const chatai::result<chatai::serve::completion_request>& parsed, const chatai::serve::request_limits& limits) {
  if (!parsed) return check_refusal(parsed.err());
  // What passed must satisfy what the server relies on later.
  if (parsed->n < 1 || parsed->n > limits.max_n) std::abort();
  if (static_cast<std::int64_t>(parsed->stop.size()) > limits.max_stop) std::abort();
  if (parsed->top_logprobs < 0 || parsed->top_logprobs > limits.max_top_logprobs) std::abort();
}

void check(const chatai::result<chatai::serve::embedding_request>& parsed, const chatai::serve::embedding_limits& limits) {
  if (!parsed) return check_refusal(parsed.err());
  if (parsed->inputs.empty() || static_cast<std::int64_t>(parsed->inputs.size()) > limits.max_inputs) std::abort();
  for (const auto& in : parsed->inputs) {
    if (in.is_text ? in.text.empty() : in.tokens.empty()) std::abort();
    for (const auto t : in.tokens)
      if (t < 0 || t >= limits.vocab_size) std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  chatai::serve::request_limits limits;
  limits.vocab_size = 49152;
  check(chatai::serve::parse_chat_request(input, limits), limits);
  check(chatai::serve::parse_completion_request(input, limits), limits);
  chatai::serve::embedding_limits embedding;
  embedding.vocab_size = limits.vocab_size;
  embedding.dimensions = 576;
  check(chatai::serve::parse_embedding_request(input, embedding), embedding);
  return 0;
}
