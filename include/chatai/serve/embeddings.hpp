// The OpenAI /v1/embeddings request that `chatai serve` accepts and the answer it writes:
// every field OpenAI defines is honoured or refused with a 400 that names it, and so is an
// unknown field, as OpenAI answers. chatai adds `pooling` and `normalize`.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "chatai/core/status.hpp"
#include "chatai/engine/embedding.hpp"
#include "chatai/engine/token.hpp"

namespace chatai::serve {

// One input: a text the server tokenizes, or token ids as given.
struct embedding_input {
  bool is_text = true;
  std::string text;
  std::vector<engine::token_id> tokens;
};

enum class embedding_encoding {
  float_array,  // "float": a JSON array of numbers
  base64,       // "base64": the little-endian float32 bytes in base64
};

// One /v1/embeddings request, validated.
struct embedding_request {
  std::string model;
  std::vector<embedding_input> inputs;  // at least one, none empty
  embedding_encoding encoding = embedding_encoding::float_array;
  std::optional<engine::pooling> pooling;  // absent: the model's (engine::default_pooling)
  bool normalize = true;
  std::string user;
};

struct embedding_limits {
  std::int64_t max_inputs = 256;
  std::int32_t vocab_size = 0;  // token ids must lie below it; 0 skips the check
  std::int64_t dimensions = 0;  // the model's width: `dimensions` must equal it; 0 skips the check
};

// Parses and validates a request body: `input` is a string, an array of strings, an array of
// token ids or an array of arrays of token ids (at most max_inputs, none empty);
// `encoding_format` "float" or "base64"; `dimensions` only the model's width (embeddings are
// not shortened); `user` any string; `pooling` "mean" or "last"; `normalize` a boolean.
// Errors: invalid_argument naming the field, which to_api_error (openai_protocol.hpp) turns
// into a 400 with that parameter.
result<embedding_request> parse_embedding_request(std::string_view body, const embedding_limits& limits);

// `values` as little-endian float32 bytes in base64 (RFC 4648, with padding).
std::string base64_floats(std::span<const float> values);

// The answer: {"object":"list","data":[{"object":"embedding","index":i,"embedding":...}],
// "model":...,"usage":{"prompt_tokens":N,"total_tokens":N}}, each vector a JSON array of
// shortest round-trip decimals, or a base64 string. The vectors must be finite.
std::string embedding_response(std::string_view model, std::span<const std::vector<float>> vectors,
                               embedding_encoding encoding, std::int64_t prompt_tokens);

}  // namespace chatai::serve
