// Parsing and validation of OpenAI embedding requests, and the answer's JSON.
#include "chatai/serve/embeddings.hpp"

#include <charconv>
#include <cstring>

#include "chatai/core/json.hpp"

namespace chatai::serve {

namespace {

// The same prefix as the chat requests' errors, which to_api_error removes.
constexpr std::string_view where = "request body";

// Token ids at input[path]: integers in [0, vocab_size). False (with the failure recorded)
// otherwise.
bool read_tokens(json::reader& r, const std::string& path, const rapidjson::Value& array, std::int32_t vocab_size,
                 std::vector<engine::token_id>& out) {
  if (array.Empty()) {
    r.fail(path, "must not be an empty array of token ids");
    return false;
  }
  out.reserve(array.Size());
  for (rapidjson::SizeType i = 0; i < array.Size(); ++i) {
    const auto& v = array[i];
    const std::string at = path + "[" + std::to_string(i) + "]";
    if (!v.IsInt64()) {
      r.fail(at, "expected a token id (an integer), got " + std::string(json::type_name(v)));
      return false;
    }
    const std::int64_t id = v.GetInt64();
    if (id < 0 || id > INT32_MAX || (vocab_size > 0 && id >= vocab_size)) {
      r.fail(at, "token " + std::to_string(id) + " is outside the vocabulary of " + std::to_string(vocab_size));
      return false;
    }
    out.push_back(static_cast<engine::token_id>(id));
  }
  return true;
}

void read_input(json::reader& r, embedding_request& req, const embedding_limits& limits) {
  const auto* v = r.raw("input");
  if (!v || v->IsNull()) {
    r.fail("input", "is required");
    return;
  }
  if (v->IsString()) {
    if (v->GetStringLength() == 0) {
      r.fail("input", "must not be an empty string");
      return;
    }
    req.inputs.push_back({true, std::string(v->GetString(), v->GetStringLength()), {}});
    return;
  }
  if (!v->IsArray()) {
    r.fail("input", "expected a string, an array of strings, an array of token ids or an array of arrays of token "
                    "ids, got " + std::string(json::type_name(*v)));
    return;
  }
  if (v->Empty()) {
    r.fail("input", "must not be an empty array");
    return;
  }
  const auto& first = (*v)[0];
  if (first.IsNumber()) {  // one input of token ids
    embedding_input in;
    in.is_text = false;
    if (read_tokens(r, "input", *v, limits.vocab_size, in.tokens)) req.inputs.push_back(std::move(in));
    return;
  }
  if (static_cast<std::int64_t>(v->Size()) > limits.max_inputs) {
    r.fail("input", "at most " + std::to_string(limits.max_inputs) + " inputs are allowed in one request, got " +
                        std::to_string(v->Size()));
    return;
  }
  const bool texts = first.IsString();
  if (!texts && !first.IsArray()) {
    r.fail("input[0]",
           "expected a string, a token id or an array of token ids, got " + std::string(json::type_name(first)));
    return;
  }
  req.inputs.reserve(v->Size());
  for (rapidjson::SizeType i = 0; i < v->Size(); ++i) {
    const auto& item = (*v)[i];
    const std::string at = "input[" + std::to_string(i) + "]";
    if (texts) {
      if (!item.IsString()) {
        r.fail(at, "expected a string like the other inputs, got " + std::string(json::type_name(item)));
        return;
      }
      if (item.GetStringLength() == 0) {
        r.fail(at, "must not be an empty string");
        return;
      }
      req.inputs.push_back({true, std::string(item.GetString(), item.GetStringLength()), {}});
      continue;
    }
    if (!item.IsArray()) {
      r.fail(at, "expected an array of token ids like the other inputs, got " + std::string(json::type_name(item)));
      return;
    }
    embedding_input in;
    in.is_text = false;
    if (!read_tokens(r, at, item, limits.vocab_size, in.tokens)) return;
    req.inputs.push_back(std::move(in));
  }
}

// The shortest decimal that reads back as the same float (at most 15 characters).
void append_float(std::string& out, float value) {
  char buf[32];
  out.append(buf, std::to_chars(buf, buf + sizeof buf, value).ptr);
}

}  // namespace

result<embedding_request> parse_embedding_request(std::string_view body, const embedding_limits& limits) {
  auto doc = json::parse(body);
  if (!doc) return error(errc::invalid_argument, std::string(where) + ": " + doc.err().message());
  embedding_request req;
  json::reader r(*doc, std::string(where));
  r.required("model", req.model);
  read_input(r, req, limits);

  std::optional<std::string> encoding;
  r.optional("encoding_format", encoding);
  if (encoding) {
    if (*encoding == "float") req.encoding = embedding_encoding::float_array;
    else if (*encoding == "base64") req.encoding = embedding_encoding::base64;
    else r.fail("encoding_format", "must be \"float\" or \"base64\", got \"" + *encoding + "\"");
  }

  std::optional<std::int64_t> dimensions;
  r.optional("dimensions", dimensions);
  if (dimensions) {
    if (*dimensions < 1) {
      r.fail("dimensions", "must be at least 1");
    } else if (limits.dimensions > 0 && *dimensions != limits.dimensions) {
      r.fail("dimensions", "this model's embeddings have " + std::to_string(limits.dimensions) +
                               " dimensions and cannot be shortened to " + std::to_string(*dimensions));
    }
  }

  std::optional<std::string> pooling;
  r.optional("pooling", pooling);
  if (pooling) {
    auto p = engine::parse_pooling(*pooling);
    if (p) req.pooling = *p;
    else r.fail("pooling", "must be \"mean\" or \"last\", got \"" + *pooling + "\"");
  }
  r.optional("normalize", req.normalize);
  r.optional("user", req.user);
  CHATAI_RETURN_IF_ERROR(r.finish());
  return req;
}

std::string base64_floats(std::span<const float> values) {
  static constexpr char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string bytes(values.size() * sizeof(float), '\0');
  for (std::size_t i = 0; i < values.size(); ++i) {
    std::uint32_t bits = 0;
    std::memcpy(&bits, &values[i], sizeof bits);
    // Little-endian, whatever the host's order.
    for (std::size_t b = 0; b < 4; ++b) bytes[4 * i + b] = static_cast<char>((bits >> (8 * b)) & 0xff);
  }
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  std::size_t i = 0;
  const auto byte = [&](std::size_t k) { return static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[k])); };
  for (; i + 3 <= bytes.size(); i += 3) {
    const std::uint32_t n = byte(i) << 16 | byte(i + 1) << 8 | byte(i + 2);
    for (int s = 18; s >= 0; s -= 6) out += alphabet[(n >> s) & 63];
  }
  const std::size_t rest = bytes.size() - i;
  if (rest > 0) {
    const std::uint32_t n = byte(i) << 16 | (rest == 2 ? byte(i + 1) << 8 : 0);
    out += alphabet[(n >> 18) & 63];
    out += alphabet[(n >> 12) & 63];
    out += rest == 2 ? alphabet[(n >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::string embedding_response(std::string_view model, std::span<const std::vector<float>> vectors,
                               embedding_encoding encoding, std::int64_t prompt_tokens) {
  std::string out = "{\"object\":\"list\",\"data\":[";
  for (std::size_t i = 0; i < vectors.size(); ++i) {
    if (i > 0) out += ',';
    out += "{\"object\":\"embedding\",\"index\":" + std::to_string(i) + ",\"embedding\":";
    if (encoding == embedding_encoding::base64) {
      out += '"' + base64_floats(vectors[i]) + '"';
    } else {
      out += '[';
      for (std::size_t k = 0; k < vectors[i].size(); ++k) {
        if (k > 0) out += ',';
        append_float(out, vectors[i][k]);
      }
      out += ']';
    }
    out += '}';
  }
  out += "],\"model\":";
  json::append_quoted(out, model);
  out += ",\"usage\":{\"prompt_tokens\":" + std::to_string(prompt_tokens) +
         ",\"total_tokens\":" + std::to_string(prompt_tokens) + "}}";
  return out;
}

}  // namespace chatai::serve
