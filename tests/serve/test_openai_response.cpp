// Tests of the answers' JSON: whole responses, stream chunks and usage parse and have OpenAI's shape.
#include <doctest/doctest.h>

#include "chatai/core/json.hpp"
#include "chatai/serve/openai_response.hpp"

using namespace chatai;
using namespace chatai::serve;

TEST_CASE("final_response has OpenAI's chat and completion shapes") {
  response_meta meta{"chatcmpl-x", 1700000000, "m", true};
  choice_result a{"hi \"there\"", engine::finish_reason::stop, {}};
  choice_result b{"yo", engine::finish_reason::length, {}};
  auto doc = json::parse(final_response(meta, {a, b}, {5, 3}));
  REQUIRE(doc.ok());
  CHECK(std::string((*doc)["object"].GetString()) == "chat.completion");
  CHECK((*doc)["created"].GetInt64() == 1700000000);
  CHECK(std::string((*doc)["choices"][0]["message"]["content"].GetString()) == "hi \"there\"");
  CHECK((*doc)["choices"][0]["logprobs"].IsNull());
  CHECK(std::string((*doc)["choices"][1]["finish_reason"].GetString()) == "length");
  CHECK((*doc)["usage"]["total_tokens"].GetInt64() == 8);

  meta.chat = false;
  doc = json::parse(final_response(meta, {a}, {1, 1}));
  REQUIRE(doc.ok());
  CHECK(std::string((*doc)["object"].GetString()) == "text_completion");
  CHECK(std::string((*doc)["choices"][0]["text"].GetString()) == "hi \"there\"");
}

TEST_CASE("stream chunks: role first, deltas, finish, usage with no choices") {
  const response_meta meta{"chatcmpl-x", 1, "m", true};
  auto start = json::parse(stream_start_chunk(meta, 1, true, ""));
  REQUIRE(start.ok());
  CHECK(std::string((*start)["choices"][0]["delta"]["role"].GetString()) == "assistant");
  CHECK((*start)["choices"][0]["index"].GetInt() == 1);
  CHECK((*start)["usage"].IsNull());
  auto delta = json::parse(stream_delta_chunk(meta, 0, "abc", {}, false));
  REQUIRE(delta.ok());
  CHECK(std::string((*delta)["choices"][0]["delta"]["content"].GetString()) == "abc");
  CHECK(!delta->HasMember("usage"));
  auto finish = json::parse(stream_finish_chunk(meta, 0, finish_reason_name(engine::finish_reason::stop, false), false));
  REQUIRE(finish.ok());
  CHECK(std::string((*finish)["choices"][0]["finish_reason"].GetString()) == "stop");
  auto usage_chunk = json::parse(stream_usage_chunk(meta, {4, 2}));
  REQUIRE(usage_chunk.ok());
  CHECK((*usage_chunk)["choices"].Size() == 0);
  CHECK((*usage_chunk)["usage"]["completion_tokens"].GetInt64() == 2);

  const response_meta text{"cmpl-x", 1, "m", false};
  CHECK(stream_start_chunk(text, 0, false, "").empty());
  auto echo = json::parse(stream_start_chunk(text, 0, false, "prompt"));
  REQUIRE(echo.ok());
  CHECK(std::string((*echo)["choices"][0]["text"].GetString()) == "prompt");
}

TEST_CASE("answers with tool calls: content null, the calls, finish_reason tool_calls unless cut by length") {
  response_meta meta{"chatcmpl-x", 1, "m", true};
  choice_result c;
  c.tool_calls.push_back({"call_1", "get_weather", "{\"city\":\"Paris\"}"});
  c.reasoning = "thinking";
  c.finish = engine::finish_reason::stop;
  auto doc = json::parse(final_response(meta, {c}, usage{3, 4, 0}));
  REQUIRE(doc);
  const auto& msg = (*doc)["choices"][0]["message"];
  CHECK(msg["content"].IsNull());
  CHECK(std::string(msg["reasoning_content"].GetString()) == "thinking");
  CHECK(std::string(msg["tool_calls"][0]["id"].GetString()) == "call_1");
  CHECK(std::string(msg["tool_calls"][0]["type"].GetString()) == "function");
  CHECK(std::string(msg["tool_calls"][0]["function"]["arguments"].GetString()) == "{\"city\":\"Paris\"}");
  CHECK(std::string((*doc)["choices"][0]["finish_reason"].GetString()) == "tool_calls");
  CHECK((*doc)["usage"]["prompt_tokens_details"]["cached_tokens"].GetInt64() == 0);
  CHECK(finish_reason_name(engine::finish_reason::length, true) == "length");
  const auto chunks = stream_tool_call_chunks(meta, 0, 1, c.tool_calls[0], false);
  REQUIRE(chunks.size() == 2);
  auto first = json::parse(chunks[0]);
  REQUIRE(first);
  const auto& head = (*first)["choices"][0]["delta"]["tool_calls"][0];
  CHECK(head["index"].GetInt() == 1);
  CHECK(std::string(head["function"]["arguments"].GetString()).empty());
  auto second = json::parse(chunks[1]);
  REQUIRE(second);
  const auto& rest = (*second)["choices"][0]["delta"]["tool_calls"][0];
  CHECK_FALSE(rest.HasMember("id"));
  CHECK(std::string(rest["function"]["arguments"].GetString()) == "{\"city\":\"Paris\"}");
}
