// Tests of the usage filter: counts from streams and whole bodies, and the usage-only chunk
// removed (or kept) however the stream is split into pieces.
#include <doctest/doctest.h>

#include <string>

#include "chatai/gateway/stream_usage.hpp"

using namespace chatai::gateway;

namespace {

const std::string chunk0 = "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}],\"usage\":null}\n\n";
const std::string chunk1 = "data: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\r\n\r\n";
const std::string usage_chunk = "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":2,\"total_tokens\":14}}\n\n";
const std::string done = "data: [DONE]\n\n";
const std::string stream = chunk0 + chunk1 + usage_chunk + done;

// Feeds `text` in pieces of `step` bytes and returns what the filter passed on.
std::string run(usage_filter& f, const std::string& text, std::size_t step) {
  std::string out;
  for (std::size_t i = 0; i < text.size(); i += step) out += f.feed(text.substr(i, step));
  out += f.finish();
  return out;
}

}  // namespace

TEST_CASE("the usage chunk is removed at every split, and counted") {
  for (std::size_t step = 1; step <= stream.size(); ++step) {
    CAPTURE(step);
    usage_filter f(true, false);
    CHECK(run(f, stream, step) == chunk0 + chunk1 + done);
    CHECK(f.prompt_tokens() == 12);
    CHECK(f.completion_tokens() == 2);
  }
}

TEST_CASE("the usage chunk stays when the client asked for it") {
  for (std::size_t step : {1, 7, 64, 4096}) {
    usage_filter f(true, true);
    CHECK(run(f, stream, step) == stream);
    CHECK(f.completion_tokens() == 2);
  }
}

TEST_CASE("complete events are passed on at once") {
  usage_filter f(true, false);
  CHECK(f.feed(chunk0 + chunk1.substr(0, 5)) == chunk0);
  CHECK(f.feed(chunk1.substr(5)) == chunk1);
  CHECK(f.feed(usage_chunk.substr(0, 20)).empty());
  CHECK(f.feed(usage_chunk.substr(20) + done) == done);
}

TEST_CASE("only usage-only chunks are taken for usage chunks") {
  CHECK(is_usage_only_event("data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1}}"));
  CHECK(is_usage_only_event("event: x\ndata:{\"choices\":[],\"usage\":{}}"));
  CHECK_FALSE(is_usage_only_event("data: {\"choices\":[{}],\"usage\":{\"prompt_tokens\":1}}"));
  CHECK_FALSE(is_usage_only_event("data: {\"choices\":[],\"usage\":null}"));
  CHECK_FALSE(is_usage_only_event("data: {\"content\":\"\\\"usage\\\"\"}"));
  CHECK_FALSE(is_usage_only_event("data: [DONE]"));
  CHECK_FALSE(is_usage_only_event(": comment \"usage\""));
}

TEST_CASE("a whole JSON body passes unchanged and its usage is counted") {
  const std::string body = "{\"choices\":[{\"message\":{\"content\":\"hi\"}}],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":4}}";
  usage_filter f(false, false);
  CHECK(run(f, body, 3) == body);
  CHECK(f.prompt_tokens() == 9);
  CHECK(f.completion_tokens() == 4);
}
