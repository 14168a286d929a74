// Tests of the usage filter: counts from streams and whole bodies, and the usage-only chunk
// removed (or kept) however the stream is split into pieces.
#include <doctest/doctest.h>

#include <algorithm>
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

TEST_CASE("an event too big for the usage chunk is passed on unfiltered, byte for byte, without being held") {
  // 3 MiB of one event fed a byte at a time: what is held back stays under the bound, and the
  // search for the event's end looks at each byte once instead of rescanning from its start.
  const std::string big = "data: {\"choices\":[],\"usage\":{},\"pad\":\"" + std::string(3 << 20, 'x') + "\"}\n\n";
  const std::string text = chunk0 + big + usage_chunk + done;
  usage_filter f(true, false);
  std::string out;
  std::size_t most_held = 0;
  for (const char c : text) {
    out += f.feed(std::string_view(&c, 1));
    most_held = std::max(most_held, f.held_bytes());
  }
  out += f.finish();
  CHECK(most_held <= usage_filter::max_held_event);
  CHECK(out == chunk0 + big + done);
  CHECK(f.bytes_examined() <= text.size());
  CHECK(f.completion_tokens() == 2);
}

TEST_CASE("an event passes on unfiltered exactly when it is longer than the bound, wherever it is split") {
  // Usage-only events of the bound's size and one byte more: the first is removed, the second
  // kept, whether it arrives whole, in two pieces or byte by byte.
  const std::string head = "data: {\"choices\":[],\"usage\":{\"completion_tokens\":5},\"pad\":\"";
  const std::string tail = "\"}\n\n";
  const std::string at_bound = head + std::string(usage_filter::max_held_event - head.size() - tail.size(), 'x') + tail;
  const std::string over = head + std::string(usage_filter::max_held_event + 1 - head.size() - tail.size(), 'x') + tail;
  REQUIRE(at_bound.size() == usage_filter::max_held_event);
  for (std::size_t step : {std::size_t(1), std::size_t(1000), usage_filter::max_held_event - 1,
                           usage_filter::max_held_event + 1, std::size_t(1) << 20}) {
    CAPTURE(step);
    usage_filter removed(true, false);
    CHECK(run(removed, chunk0 + at_bound + done, step) == chunk0 + done);
    usage_filter kept(true, false);
    CHECK(run(kept, chunk0 + over + done, step) == chunk0 + over + done);
    CHECK(kept.held_bytes() == 0);
  }
}

TEST_CASE("the end of an event is found across pieces with CRLF lines") {
  // "\n\r\n" split after every byte, and a lone CR that does not end anything.
  const std::string crlf_usage = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1}}\r\n\r\n";
  const std::string odd = "data: {\"choices\":[{\"delta\":{}}]}\n\r\rdata: x\n\n";
  for (std::size_t step = 1; step <= 4; ++step) {
    CAPTURE(step);
    usage_filter f(true, false);
    CHECK(run(f, chunk1 + crlf_usage + odd + done, step) == chunk1 + odd + done);
    CHECK(f.bytes_examined() <= (chunk1 + crlf_usage + odd + done).size());
  }
}
