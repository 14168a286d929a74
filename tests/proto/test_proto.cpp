// Tests of the protocol module: frames and their reader, hello, field rules, request encoding,
// the body rule, the status document and the usage of long JSON bodies.
#include <doctest/doctest.h>

#include <vector>

#include "chatai/proto/frames.hpp"
#include "chatai/proto/usage.hpp"
#include "chatai/proto/wire.hpp"

using namespace chatai;
using namespace chatai::proto;

namespace {

struct seen {
  frame_kind kind;
  std::uint32_t id;
  std::string payload;
};

// Feeds `bytes` in pieces of `step` bytes and returns the frames read.
result<std::vector<seen>> read_all(std::string_view bytes, std::size_t step, std::uint32_t max_payload = max_frame_payload) {
  frame_reader reader(max_payload);
  std::vector<seen> out;
  for (std::size_t i = 0; i < bytes.size(); i += step) {
    auto st = reader.feed(bytes.substr(i, step), [&](const frame_view& f) {
      out.push_back({f.kind, f.id, std::string(f.payload)});
      return status{};
    });
    if (!st) return std::move(st).err();
  }
  if (reader.buffered() != 0) return error(errc::parse_error, "left over");
  return out;
}

std::string raw_frame(std::uint8_t kind, std::uint32_t id, std::string_view payload, std::uint32_t claimed_length) {
  std::string out(1, static_cast<char>(kind));
  for (const std::uint32_t v : {id, claimed_length})
    for (int shift = 24; shift >= 0; shift -= 8) out += static_cast<char>(v >> shift);
  out.append(payload);
  return out;
}

}  // namespace

TEST_CASE("frames come out as they went in, however the bytes are cut") {
  std::string wire;
  append_frame(wire, frame_kind::hello, 0, encode_hello({2, 256, 262144, max_frame_payload}));
  append_frame(wire, frame_kind::open, 7, "{\"v\":1}\n");
  const std::string big(150000, 'x');
  append_frames(wire, frame_kind::data, 7, big);
  append_window(wire, 7, 4096);
  append_frame(wire, frame_kind::cancel, 9);
  append_end(wire, 7, 1);
  append_frame(wire, frame_kind::goaway, 0);
  for (const std::size_t step : {std::size_t{1}, std::size_t{5}, std::size_t{9}, std::size_t{4096}, wire.size()}) {
    CAPTURE(step);
    auto frames = read_all(wire, step);
    REQUIRE(frames);
    REQUIRE(frames->size() == 9);  // hello, open, 3 data, window, cancel, end, goaway
    CHECK((*frames)[0].kind == frame_kind::hello);
    CHECK((*frames)[1].payload == "{\"v\":1}\n");
    std::string joined;
    for (int i = 2; i < 5; ++i) {
      CHECK((*frames)[i].kind == frame_kind::data);
      CHECK((*frames)[i].payload.size() <= max_frame_payload);
      joined += (*frames)[i].payload;
    }
    CHECK(joined == big);
    CHECK(window_credit({frame_kind::window, 7, (*frames)[5].payload}) == 4096);
    CHECK((*frames)[6].kind == frame_kind::cancel);
    CHECK(end_status({frame_kind::end, 7, (*frames)[7].payload}) == 1);
    CHECK((*frames)[8].kind == frame_kind::goaway);
  }
}

TEST_CASE("the reader refuses a bad frame for good and holds at most one frame") {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {raw_frame(0, 1, "", 0), "unknown kind"},
      {raw_frame(8, 1, "", 0), "unknown kind"},
      {raw_frame(3, 1, "", max_frame_payload + 1), "above the limit"},
      {raw_frame(3, 1, "", 0xFFFFFFFFu), "above the limit"},
      {raw_frame(1, 5, "{}", 2), "must have id 0"},
      {raw_frame(7, 5, "", 0), "must have id 0"},
      {raw_frame(3, 0, "x", 1), "must not have id 0"},
      {raw_frame(4, 1, "abc", 3), "holds 4 bytes"},
      {raw_frame(4, 1, std::string(4, '\0'), 4), "grants no credit"},
      {raw_frame(6, 1, "\x03", 1), "0, 1 or 2"},
      {raw_frame(6, 1, "", 0), "0, 1 or 2"},
      {raw_frame(5, 1, "x", 1), "cancel frame is empty"},
      {raw_frame(2, 1, "", 0), "open frame is not empty"},
  };
  for (const auto& [bytes, expected] : cases) {
    CAPTURE(expected);
    frame_reader reader;
    int frames = 0;
    const auto count = [&](const frame_view&) {
      ++frames;
      return status{};
    };
    auto st = reader.feed(bytes, count);
    REQUIRE_FALSE(st);
    CHECK(st.err().code() == errc::parse_error);
    CHECK(st.err().message().find(expected) != std::string::npos);
    // Nothing after a bad frame is believed.
    std::string good;
    append_frame(good, frame_kind::cancel, 2);
    CHECK_FALSE(reader.feed(good, count));
    CHECK(frames == 0);
  }
  // A payload limit below the protocol's is the reader's own.
  std::string wire;
  append_frame(wire, frame_kind::data, 1, std::string(2000, 'y'));
  CHECK_FALSE(read_all(wire, 100, 1024));
  // A partial frame is held, and only it.
  frame_reader reader;
  std::string partial;
  append_frame(partial, frame_kind::data, 1, std::string(1000, 'z'));
  REQUIRE(reader.feed(std::string_view(partial).substr(0, 600), [](const frame_view&) { return status{}; }));
  CHECK(reader.buffered() == 600);
}

TEST_CASE("an error from the consumer stops the feed where it is") {
  std::string wire;
  append_frame(wire, frame_kind::cancel, 1);
  append_frame(wire, frame_kind::cancel, 2);
  frame_reader reader;
  std::vector<std::uint32_t> ids;
  auto st = reader.feed(wire, [&](const frame_view& f) -> status {
    ids.push_back(f.id);
    return error(errc::invalid_argument, "no");
  });
  CHECK_FALSE(st);
  CHECK(ids == std::vector<std::uint32_t>{1});
}

TEST_CASE("hello is strict") {
  auto h = parse_hello(encode_hello({2, 64, 65536, 32768}));
  REQUIRE(h);
  CHECK(h->max_requests == 64);
  CHECK(h->window == 65536);
  CHECK(h->max_payload == 32768);
  for (const char* bad : {"", "[]", "{\"v\":1,\"max_requests\":1,\"window\":1,\"max_payload\":1024}",
                          "{\"v\":2,\"max_requests\":0,\"window\":1,\"max_payload\":1024}",
                          "{\"v\":2,\"max_requests\":1,\"window\":1,\"max_payload\":70000}",
                          "{\"v\":2,\"max_requests\":1,\"window\":1}",
                          "{\"v\":2,\"max_requests\":1,\"window\":1,\"max_payload\":1024,\"x\":1}"}) {
    CAPTURE(bad);
    CHECK_FALSE(parse_hello(bad));
  }
}

TEST_CASE("the field rules are anchored, and user tags are made valid") {
  CHECK(valid_request_id("chatcmpl-1.a:b_c"));
  CHECK_FALSE(valid_request_id(""));
  CHECK_FALSE(valid_request_id(std::string(129, 'a')));
  CHECK_FALSE(valid_request_id("a b"));
  CHECK(valid_user_tag(""));
  CHECK(valid_user_tag("alice@uni.example+x=y"));
  CHECK_FALSE(valid_user_tag("alice bob"));
  CHECK(valid_service_id("llama:8b"));
  CHECK_FALSE(valid_service_id(".."));
  CHECK_FALSE(valid_service_id("a/b"));
  CHECK(valid_model_name("meta-llama/Llama-3.1-8B"));
  CHECK_FALSE(valid_model_name("a b"));
  CHECK(user_tag("Jürgen Müller") == "J__rgen_M__ller");
  CHECK(valid_user_tag(user_tag(std::string(300, '%'))));
  CHECK(user_tag(std::string(300, 'a')).size() == 128);
}

TEST_CASE("a request is its header line, a newline and the body") {
  request r;
  r.id = "r1";
  r.user = "u";
  r.service = "chat";
  r.headers = {{"accept", "text/event-stream"}};
  r.body = "{\"model\":\"m\"}";
  CHECK(encode_request(r) ==
        "{\"v\":1,\"id\":\"r1\",\"user\":\"u\",\"service\":\"chat\",\"method\":\"POST\",\"path\":\"/v1/chat/"
        "completions\",\"headers\":{\"accept\":\"text/event-stream\"},\"body_length\":13}\n{\"model\":\"m\"}");
  r.affinity = "00ff";
  CHECK(encode_request(r).find(",\"path\":\"/v1/chat/completions\",\"affinity\":\"00ff\",\"headers\"") != std::string::npos);
  CHECK(valid_affinity(""));
  CHECK(valid_affinity("0123456789abcdef0123456789abcdef"));
  CHECK_FALSE(valid_affinity("0123456789abcdef0123456789abcdef0"));
  CHECK_FALSE(valid_affinity("00FF"));
}

TEST_CASE("streams are made to report their usage; other bodies pass byte for byte") {
  CHECK(prepare_body("{\"model\":\"m\",  \"x\":1}")->body == "{\"model\":\"m\",  \"x\":1}");
  auto streamed = prepare_body("{\"stream\":true}");
  REQUIRE(streamed);
  CHECK(streamed->stream);
  CHECK(streamed->body == "{\"stream\":true,\"stream_options\":{\"include_usage\":true}}");
  CHECK(prepare_body("{\"stream\":true,\"stream_options\":{\"include_usage\":false}}")->body ==
        "{\"stream\":true,\"stream_options\":{\"include_usage\":true}}");
  CHECK_FALSE(prepare_body("{\"stream\":true,\"stream_options\":3}"));
  CHECK_FALSE(prepare_body("{\"stream\":true,\"stream_options\":{\"include_usage\":\"yes\"}}"));
}

TEST_CASE("the status document reads back what was written, and tolerates what it does not know") {
  status_document doc;
  doc.generation = 42;
  service_status s;
  s.id = "chat";
  s.models = {"smol", "smol-2"};
  s.can_scale_from_zero = true;
  s.ready = 2;
  s.starting = 1;
  s.draining = 3;
  s.pending = 4;
  s.open_breakers = 1;
  s.in_flight = 17;
  doc.services.push_back(s);
  auto back = parse_status(encode_status(doc));
  REQUIRE(back);
  CHECK(back->generation == 42);
  REQUIRE(back->services.size() == 1);
  const auto& b = back->services[0];
  CHECK(b.id == "chat");
  CHECK(b.models == s.models);
  CHECK(b.can_scale_from_zero);
  CHECK(b.ready == 2);
  CHECK(b.starting == 1);
  CHECK(b.draining == 3);
  CHECK(b.pending == 4);
  CHECK(b.open_breakers == 1);
  CHECK(b.in_flight == 17);
  CHECK(parse_status(R"({"v":3,"new":1,"services":[{"id":"a","later":[1],"backends":{"ready":1,"soon":2}}]})"));
  CHECK_FALSE(parse_status(R"({"services":[{"models":["m"]}]})"));
  CHECK_FALSE(parse_status(R"({"services":[{"id":"a","backends":{"ready":"1"}}]})"));
  CHECK_FALSE(parse_status("[1]"));
}

namespace {

// The counts a JSON body gives when it is fed in pieces of `step` bytes.
std::pair<std::optional<std::int64_t>, std::optional<std::int64_t>> usage_of(std::string_view body, std::size_t step) {
  usage_scanner scanner(false);
  for (std::size_t i = 0; i < body.size(); i += step) scanner.feed(body.substr(i, step));
  scanner.finish();
  return {scanner.prompt_tokens(), scanner.completion_tokens()};
}

// An answer of embeddings of about `bytes` bytes, then `rest`.
std::string long_answer(std::size_t bytes, std::string_view rest) {
  std::string out = "{\"object\":\"list\",\"data\":[";
  for (std::size_t i = 0; out.size() < bytes; ++i) {
    if (i > 0) out += ',';
    out += "{\"object\":\"embedding\",\"index\":" + std::to_string(i) + ",\"embedding\":[0.0123,-0.0456,1e-05]}";
  }
  out += "],\"model\":\"m\"";
  out += rest;
  return out;
}

}  // namespace

TEST_CASE("the usage at the end of a JSON body beyond 1 MiB is found, however it is cut") {
  const auto body = long_answer(3u << 20, R"(,"usage":{"prompt_tokens":1234,"total_tokens":1234}})");
  for (std::size_t step : {std::size_t{1} << 20, std::size_t{4096}, std::size_t{4093}}) {
    CAPTURE(step);
    const auto [prompt, completion] = usage_of(body, step);
    CHECK(prompt == 1234);
    CHECK_FALSE(completion);  // embeddings have none
  }
  // The key split at every place between two pieces.
  const std::string small_tail = R"(,"usage" : {"prompt_tokens":8,"completion_tokens":2}})";
  const auto spaced = long_answer(1u << 20, small_tail);
  for (std::size_t cut = spaced.size() - small_tail.size(); cut < spaced.size(); ++cut) {
    usage_scanner scanner(false);
    scanner.feed(std::string_view(spaced).substr(0, cut));
    scanner.feed(std::string_view(spaced).substr(cut));
    scanner.finish();
    REQUIRE(scanner.prompt_tokens() == 8);
    REQUIRE(scanner.completion_tokens() == 2);
  }
}

TEST_CASE("text in a long JSON body cannot forge its usage") {
  // After the real usage: its key and object quoted inside a string, and a key that ends in
  // usage after an escaped quote.
  const auto forged = long_answer(2u << 20, R"(,"usage":{"prompt_tokens":7},"note":"\"usage\":{\"prompt_tokens\":1}",)"
                                            R"("also":{"x\"usage":{"prompt_tokens":2}}})");
  CHECK(usage_of(forged, 65536).first == 7);
  // A long body with no usage, or a usage that is not an object, gives none.
  CHECK_FALSE(usage_of(long_answer(2u << 20, "}"), 65536).first);
  CHECK_FALSE(usage_of(long_answer(2u << 20, R"(,"usage":[1,2]})"), 65536).first);
  CHECK_FALSE(usage_of(long_answer(2u << 20, R"(,"usage":{"prompt_tokens":-3}})"), 65536).first);
}
