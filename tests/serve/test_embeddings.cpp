// The /v1/embeddings request parser (every input form, every field honoured or refused by
// name) and the answer's JSON: OpenAI's shape, shortest round-trip floats, base64 bytes.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "chatai/core/json.hpp"
#include "chatai/serve/embeddings.hpp"
#include "chatai/serve/openai_protocol.hpp"

using namespace chatai;
using namespace chatai::serve;

namespace {

embedding_limits limits() {
  embedding_limits l;
  l.max_inputs = 4;
  l.vocab_size = 100;
  l.dimensions = 8;
  return l;
}

embedding_request parsed(std::string_view body) {
  auto r = parse_embedding_request(body, limits());
  REQUIRE_MESSAGE(r.ok(), (r.ok() ? std::string() : r.err().message()));
  return std::move(*r);
}

// The 400 of a refused body: its parameter and message.
api_error refused(std::string_view body) {
  auto r = parse_embedding_request(body, limits());
  REQUIRE_FALSE(r.ok());
  return to_api_error(r.err());
}

std::vector<float> decode_base64_floats(std::string_view text) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
  };
  std::string bytes;
  std::uint32_t bits = 0;
  int have = 0;
  for (char c : text) {
    if (c == '=') break;
    bits = bits << 6 | static_cast<std::uint32_t>(value(c));
    have += 6;
    if (have >= 8) {
      have -= 8;
      bytes += static_cast<char>((bits >> have) & 0xff);
    }
  }
  REQUIRE(bytes.size() % 4 == 0);
  std::vector<float> out(bytes.size() / 4);
  for (std::size_t i = 0; i < out.size(); ++i) {
    std::uint32_t u = 0;
    for (int b = 3; b >= 0; --b) u = u << 8 | static_cast<unsigned char>(bytes[4 * i + static_cast<std::size_t>(b)]);
    std::memcpy(&out[i], &u, 4);
  }
  return out;
}

}  // namespace

TEST_CASE("every input form is read") {
  auto one = parsed(R"({"model":"m","input":"hello"})");
  CHECK(one.model == "m");
  REQUIRE(one.inputs.size() == 1);
  CHECK(one.inputs[0].is_text);
  CHECK(one.inputs[0].text == "hello");
  CHECK(one.encoding == embedding_encoding::float_array);
  CHECK_FALSE(one.pooling);
  CHECK(one.normalize);

  auto texts = parsed(R"({"model":"m","input":["a","b","c"]})");
  REQUIRE(texts.inputs.size() == 3);
  CHECK(texts.inputs[2].text == "c");

  auto ids = parsed(R"({"model":"m","input":[1,2,99]})");
  REQUIRE(ids.inputs.size() == 1);
  CHECK_FALSE(ids.inputs[0].is_text);
  CHECK(ids.inputs[0].tokens == std::vector<engine::token_id>{1, 2, 99});

  auto lists = parsed(R"({"model":"m","input":[[1],[2,3]]})");
  REQUIRE(lists.inputs.size() == 2);
  CHECK(lists.inputs[1].tokens == std::vector<engine::token_id>{2, 3});

  // A list of token ids is one input however long; the batch limit counts inputs.
  CHECK(parsed(R"({"model":"m","input":[1,2,3,4,5,6]})").inputs.size() == 1);
}

TEST_CASE("the known fields are honoured") {
  auto r = parsed(R"({"model":"m","input":"x","encoding_format":"base64","dimensions":8,"user":"u-1",)"
                  R"("pooling":"last","normalize":false})");
  CHECK(r.encoding == embedding_encoding::base64);
  CHECK(r.user == "u-1");
  REQUIRE(r.pooling);
  CHECK(*r.pooling == engine::pooling::last);
  CHECK_FALSE(r.normalize);
  CHECK(parsed(R"({"model":"m","input":"x","encoding_format":"float","pooling":"mean"})").pooling == engine::pooling::mean);
  // null means absent, as for the chat requests
  CHECK(parsed(R"({"model":"m","input":"x","encoding_format":null,"dimensions":null,"user":null})").encoding ==
        embedding_encoding::float_array);
}

TEST_CASE("refusals name the field") {
  const struct {
    const char* body;
    const char* param;
  } cases[] = {
      {R"({"input":"x"})", "model"},
      {R"({"model":"m"})", "input"},
      {R"({"model":"m","input":null})", "input"},
      {R"({"model":"m","input":""})", "input"},
      {R"({"model":"m","input":[]})", "input"},
      {R"({"model":"m","input":["a",""]})", "input"},
      {R"({"model":"m","input":["a",1]})", "input"},
      {R"({"model":"m","input":[[1],[]]})", "input"},
      {R"({"model":"m","input":[[1],"a"]})", "input"},
      {R"({"model":"m","input":[1,100]})", "input"},
      {R"({"model":"m","input":[1,-1]})", "input"},
      {R"({"model":"m","input":[1,2.5]})", "input"},
      {R"({"model":"m","input":[{"a":1}]})", "input"},
      {R"({"model":"m","input":42})", "input"},
      {R"({"model":"m","input":["a","b","c","d","e"]})", "input"},
      {R"({"model":"m","input":"x","encoding_format":"int8"})", "encoding_format"},
      {R"({"model":"m","input":"x","encoding_format":1})", "encoding_format"},
      {R"({"model":"m","input":"x","dimensions":4})", "dimensions"},
      {R"({"model":"m","input":"x","dimensions":0})", "dimensions"},
      {R"({"model":"m","input":"x","dimensions":"8"})", "dimensions"},
      {R"({"model":"m","input":"x","user":5})", "user"},
      {R"({"model":"m","input":"x","pooling":"cls"})", "pooling"},
      {R"({"model":"m","input":"x","normalize":"yes"})", "normalize"},
      {R"({"model":"m","input":"x","truncate":true})", "truncate"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.body);
    const api_error e = refused(c.body);
    CHECK(e.http_status == 400);
    CHECK(e.param == c.param);
    CHECK(e.type == "invalid_request_error");
  }
  CHECK(refused(R"({"model":"m","input":"x","dimensions":4})").message ==
        "dimensions this model's embeddings have 8 dimensions and cannot be shortened to 4");
  CHECK(refused(R"({"model":"m","input":[[1],[3,100]]})").message == "input[1][1] token 100 is outside the vocabulary of 100");
  CHECK(refused(R"({"model":"m","input":"x","truncate":true})").message ==
        "Unrecognized request argument supplied: truncate");
  CHECK(refused(R"({"model":"m"})").message == "'input' is a required property");
  const api_error bad_json = refused("{");
  CHECK(bad_json.param.empty());
}

TEST_CASE("the answer has OpenAI's shape, with floats that read back exactly") {
  const std::vector<std::vector<float>> vectors = {{0.1f, -2.5f, 1e-7f, 3.4028235e38f}, {0.0f, 1.0f / 3.0f, -0.0f, 7.0f}};
  const std::string body = embedding_response("smol", vectors, embedding_encoding::float_array, 12);
  auto doc = json::parse(body);
  REQUIRE(doc.ok());
  CHECK(std::string((*doc)["object"].GetString()) == "list");
  CHECK(std::string((*doc)["model"].GetString()) == "smol");
  CHECK((*doc)["usage"]["prompt_tokens"].GetInt64() == 12);
  CHECK((*doc)["usage"]["total_tokens"].GetInt64() == 12);
  CHECK((*doc)["usage"].MemberCount() == 2);
  const auto& data = (*doc)["data"];
  REQUIRE(data.Size() == 2);
  for (rapidjson::SizeType i = 0; i < 2; ++i) {
    CHECK(std::string(data[i]["object"].GetString()) == "embedding");
    CHECK(data[i]["index"].GetInt64() == i);
    const auto& e = data[i]["embedding"];
    REQUIRE(e.Size() == 4);
    for (rapidjson::SizeType k = 0; k < 4; ++k) CHECK(static_cast<float>(e[k].GetDouble()) == vectors[i][k]);
  }
  CHECK(body.find("0.1,-2.5,1e-07,3.4028235e+38") != std::string::npos);  // shortest forms

  const std::string b64 = embedding_response("smol", vectors, embedding_encoding::base64, 12);
  auto b = json::parse(b64);
  REQUIRE(b.ok());
  for (rapidjson::SizeType i = 0; i < 2; ++i) {
    const auto decoded = decode_base64_floats((*b)["data"][i]["embedding"].GetString());
    REQUIRE(decoded.size() == 4);
    for (std::size_t k = 0; k < 4; ++k) CHECK(std::memcmp(&decoded[k], &vectors[i][k], 4) == 0);
  }
}

TEST_CASE("base64 is RFC 4648 over little-endian float32") {
  const float one[] = {1.0f};  // 00 00 80 3f
  CHECK(base64_floats(one) == "AACAPw==");
  const float two[] = {1.0f, -2.0f};  // 00 00 80 3f 00 00 00 c0
  CHECK(base64_floats(two) == "AACAPwAAAMA=");
  const float three[] = {1.0f, -2.0f, 0.5f};  // ... 00 00 00 3f
  CHECK(base64_floats(three) == "AACAPwAAAMAAAAA/");
  CHECK(base64_floats({}).empty());
}
