// Tests of OpenAI request parsing: accepted shapes, rejected types, errors naming the parameter.
#include <doctest/doctest.h>

#include "chatai/core/json.hpp"
#include "chatai/serve/openai_protocol.hpp"

using namespace chatai;
using namespace chatai::serve;

namespace {
const request_limits limits{16, 4, 20, 1000};

api_error chat_error(std::string_view body) {
  auto r = parse_chat_request(body, limits);
  REQUIRE_FALSE(r);
  return to_api_error(r.err());
}
}  // namespace

TEST_CASE("a full chat request is read") {
  auto r = parse_chat_request(R"({
    "model": "smollm2", "messages": [
      {"role": "system", "content": "Be brief."},
      {"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]}],
    "max_completion_tokens": 32, "max_tokens": 8, "temperature": 0.7, "top_p": 0.9, "top_k": 40,
    "min_p": 0.05, "presence_penalty": 0.5, "frequency_penalty": 0.25, "repetition_penalty": 1.1,
    "seed": 7, "stop": ["\n\n", "User:"], "n": 2, "logprobs": true, "top_logprobs": 3,
    "logit_bias": {"42": -100, "7": 2.5}, "stream": true, "stream_options": {"include_usage": true},
    "user": "u1", "response_format": {"type": "text"}, "tools": [], "parallel_tool_calls": false, "store": false
  })", limits);
  REQUIRE(r);
  CHECK(r->model == "smollm2");
  REQUIRE(r->messages.size() == 2);
  CHECK(r->messages[1].content == "Hi there");
  CHECK(*r->max_tokens == 32);
  CHECK(r->sampling.temperature == doctest::Approx(0.7));
  CHECK(r->sampling.top_k == 40);
  CHECK(r->sampling.seed == 7u);
  CHECK(r->stop == std::vector<std::string>{"\n\n", "User:"});
  CHECK(r->n == 2);
  CHECK(r->logprobs);
  CHECK(r->top_logprobs == 3);
  CHECK(r->sampling.logit_bias.size() == 2);
  CHECK(r->stream);
  CHECK(r->include_usage);
}

TEST_CASE("wrong types and values are rejected naming the parameter") {
  auto e = chat_error(R"({"model":"m","messages":[{"role":"user","content":"x"}],"temperature":"hot"})");
  CHECK(e.http_status == 400);
  CHECK(e.param == "temperature");
  CHECK(e.message == "temperature expected a number, got a string");

  CHECK(chat_error(R"({"model":"m","messages":[{"role":"user","content":"x"}],"temperature":3})").param == "temperature");
  CHECK(chat_error(R"({"model":"m","messages":[{"role":"user","content":"x"}],"n":0})").param == "n");
  CHECK(chat_error(R"({"model":"m","messages":[{"role":"user","content":"x"}],"stop":5})").param == "stop");
  CHECK(chat_error(R"({"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":0})").param == "max_tokens");
  CHECK(chat_error(R"({"model":"m","messages":[{"role":"user","content":"x"}],"logit_bias":{"x":1}})").param == "logit_bias");
  CHECK(chat_error(R"({"model":"m","messages":[{"role":"user","content":"x"}],"logit_bias":{"5000":1}})").param == "logit_bias");
  CHECK(chat_error(R"({"model":"m","messages":[{"role":"user","content":"x"}],"top_logprobs":2})").param == "top_logprobs");
  CHECK(chat_error(R"({"model":"m","messages":[{"role":"wizard","content":"x"}]})").param == "messages");
  CHECK(chat_error(R"({"model":"m","messages":[{"role":"user","content":[{"type":"image_url"}]}]})").param == "messages");
  CHECK(chat_error(R"({"model":"m","messages":[]})").param == "messages");
  CHECK(chat_error(R"({"messages":[{"role":"user","content":"x"}]})").message == "'model' is a required property");
  CHECK(chat_error(R"({"model":"m","messages":[{"role":"user","content":"x"}],"stream_options":{"include_usage":true}})").param == "stream_options");
}

TEST_CASE("invalid JSON is an error without a parameter") {
  auto e = chat_error("{\"model\":");
  CHECK(e.param.empty());
  CHECK(e.message.find("JSON parse error") != std::string::npos);
}

TEST_CASE("completion requests take a prompt and legacy logprobs") {
  auto r = parse_completion_request(R"({"model":"m","prompt":"Once upon","max_tokens":5,"logprobs":2,"echo":true})", limits);
  REQUIRE(r);
  CHECK_FALSE(r->chat);
  CHECK(r->prompt == "Once upon");
  CHECK(r->top_logprobs == 2);
  CHECK(r->echo);
  auto bad = parse_completion_request(R"({"model":"m","prompt":[1,2,3]})", limits);
  REQUIRE_FALSE(bad);
  CHECK(to_api_error(bad.err()).param == "prompt");
}

TEST_CASE("errors serialise in OpenAI's shape") {
  api_error e = invalid_request("bad \"x\"", "temperature");
  auto doc = json::parse(e.to_json());
  REQUIRE(doc);
  const auto& err = (*doc)["error"];
  CHECK(std::string(err["message"].GetString()) == "bad \"x\"");
  CHECK(std::string(err["type"].GetString()) == "invalid_request_error");
  CHECK(std::string(err["param"].GetString()) == "temperature");
  CHECK(err["code"].IsNull());
}

TEST_CASE("tools, tool_choice and response_format are read") {
  auto r = parse_chat_request(R"({"model": "m", "messages": [
      {"role": "user", "content": "Weather?"},
      {"role": "assistant", "content": null, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
      {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}],
    "tools": [{"type": "function", "function": {"name": "get_weather", "description": "d",
               "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}, "strict": true}}],
    "tool_choice": {"type": "function", "function": {"name": "get_weather"}}, "parallel_tool_calls": false,
    "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}, "strict": true}}
  })", limits);
  REQUIRE(r);
  REQUIRE(r->messages.size() == 3);
  CHECK(r->messages[1].content_null);
  REQUIRE(r->messages[1].tool_calls.size() == 1);
  CHECK(r->messages[1].tool_calls[0].name == "get_weather");
  CHECK(r->messages[2].tool_call_id == "call_1");
  REQUIRE(r->tools.size() == 1);
  CHECK(r->tools[0].strict);
  CHECK(r->tools[0].parameters.find("\"city\"") != std::string::npos);
  CHECK(r->tool_choice == tool_choice_mode::named);
  CHECK(r->tool_choice_name == "get_weather");
  CHECK_FALSE(r->parallel_tool_calls);
  CHECK(r->response_format == response_format_type::json_schema);
  CHECK(r->response_schema == "{\"type\":\"object\"}");

  auto plain = parse_chat_request(R"({"model": "m", "messages": [{"role": "user", "content": "x"}],
    "tools": [{"type": "function", "function": {"name": "f"}}]})", limits);
  REQUIRE(plain);
  CHECK(plain->tool_choice == tool_choice_mode::auto_);
  auto none = parse_chat_request(R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "tool_choice": "auto"})", limits);
  REQUIRE(none);
  CHECK(none->tool_choice == tool_choice_mode::none);
}

TEST_CASE("what is not honoured is refused, naming the field") {
  const std::string head = R"({"model": "m", "messages": [{"role": "user", "content": "x"}], )";
  const auto param_of = [&](std::string tail) { return chat_error(head + tail + "}"); };
  auto e = param_of(R"("frobnicate": 1)");
  CHECK(e.param == "frobnicate");
  CHECK(e.message == "Unrecognized request argument supplied: frobnicate");
  CHECK(param_of(R"("store": true)").param == "store");
  CHECK(param_of(R"("audio": {"voice": "x"})").param == "audio");
  CHECK(param_of(R"("modalities": ["text", "audio"])").param == "modalities");
  CHECK(param_of(R"("prediction": {"type": "content", "content": "x"})").param == "prediction");
  CHECK(param_of(R"("functions": [{"name": "f"}])").param == "functions");
  CHECK(param_of(R"("tool_choice": "required")").param == "tool_choice");
  CHECK(param_of(R"("tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": {"type": "function", "function": {"name": "g"}})").param == "tool_choice");
  CHECK(param_of(R"("tools": [{"type": "custom", "custom": {"name": "f"}}])").param == "tools");
  CHECK(param_of(R"("tools": [{"type": "function", "function": {"name": "bad name"}}])").param == "tools");
  CHECK(param_of(R"("response_format": {"type": "xml"})").param == "response_format");
  CHECK(param_of(R"("reasoning_effort": "extreme")").param == "reasoning_effort");
  CHECK(param_of(R"("service_tier": "priority")").param == "service_tier");
  CHECK(chat_error(R"({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]})")
            .param == "messages");
  CHECK(chat_error(R"({"model": "m", "messages": [{"role": "tool", "content": "x"}]})").param == "messages");
  CHECK(chat_error(R"({"model": "m", "messages": [{"role": "assistant", "content": "x", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "not json"}}]}]})")
            .param == "messages");
  auto c = parse_completion_request(R"({"model": "m", "prompt": "x", "suffix": "y"})", limits);
  REQUIRE_FALSE(c);
  CHECK(to_api_error(c.err()).param == "suffix");
}
