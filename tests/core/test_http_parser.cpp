// Tests of the HTTP/1.1 request and response parsers.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "chatai/core/http_parser.hpp"

using namespace chatai::http;

namespace {

struct parsed {
  std::vector<request> requests;
  int failure = 0;
  std::size_t leftover = 0;
};

// Feeds `input` in pieces of `step` bytes (0: at once) and collects what the parser makes of it.
parsed parse_all(std::string_view input, std::size_t step = 0, parser_limits limits = {}) {
  request_parser parser(limits);
  parsed out;
  std::size_t offset = 0;
  do {
    const std::size_t n = step == 0 ? input.size() : std::min(step, input.size() - offset);
    parser.feed(input.substr(offset, n));
    offset += n;
    request req;
    parse_state st;
    while ((st = parser.parse(req)) == parse_state::complete) out.requests.push_back(std::move(req));
    if (st == parse_state::failed) {
      out.failure = parser.failure().status;
      return out;
    }
  } while (offset < input.size());
  out.leftover = parser.buffered();
  return out;
}

int failure_of(std::string_view input, parser_limits limits = {}) { return parse_all(input, 0, limits).failure; }

}  // namespace

TEST_CASE("a simple GET with headers") {
  const auto r = parse_all("GET /v1/models?x=1 HTTP/1.1\r\nHost: example\r\nX-Thing:  a b \r\n\r\n");
  REQUIRE(r.failure == 0);
  REQUIRE(r.requests.size() == 1);
  const auto& req = r.requests[0];
  CHECK(req.method == "GET");
  CHECK(req.target == "/v1/models?x=1");
  CHECK(req.path == "/v1/models");
  CHECK(req.query == "x=1");
  CHECK(req.version_minor == 1);
  CHECK(req.keep_alive);
  REQUIRE(req.headers.find("HOST") != nullptr);
  CHECK(*req.headers.find("host") == "example");
  CHECK(*req.headers.find("x-thing") == "a b");
  CHECK(req.body.empty());
}

TEST_CASE("keep-alive follows the version and the Connection header") {
  CHECK_FALSE(parse_all("GET / HTTP/1.1\r\nConnection: Close\r\n\r\n").requests.at(0).keep_alive);
  CHECK_FALSE(parse_all("GET / HTTP/1.1\r\nConnection: upgrade, close\r\n\r\n").requests.at(0).keep_alive);
  CHECK_FALSE(parse_all("GET / HTTP/1.0\r\n\r\n").requests.at(0).keep_alive);
  CHECK(parse_all("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").requests.at(0).keep_alive);
  CHECK(parse_all("GET / HTTP/1.1\r\n\r\n").requests.at(0).keep_alive);
}

TEST_CASE("pipelined requests come out one after another and leftovers are kept") {
  const std::string input =
      "POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"
      "GET /b HTTP/1.1\r\n\r\n"
      "POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
      "GET /d HT";
  const auto r = parse_all(input);
  REQUIRE(r.failure == 0);
  REQUIRE(r.requests.size() == 3);
  CHECK(r.requests[0].path == "/a");
  CHECK(r.requests[0].body == "hello");
  CHECK(r.requests[1].path == "/b");
  CHECK(r.requests[2].body == "abc");
  CHECK(r.leftover == 9);
}

TEST_CASE("chunked bodies with extensions and trailers") {
  const auto r = parse_all(
      "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
      "4;name=value\r\nWiki\r\n5 ; ext\r\npedia\r\nA\r\n in chunks\r\n0\r\nExpires: never\r\nX-Sum: 1\r\n\r\n");
  REQUIRE(r.failure == 0);
  REQUIRE(r.requests.size() == 1);
  CHECK(r.requests[0].body == "Wikipedia in chunks");
}

TEST_CASE("bare LF line endings are accepted, bare CR is not") {
  const auto r = parse_all("GET / HTTP/1.1\nHost: a\n\n");
  REQUIRE(r.requests.size() == 1);
  CHECK(*r.requests[0].headers.find("host") == "a");
  CHECK(failure_of("GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n") == 400);
}

TEST_CASE("malformed requests are refused with 400") {
  CHECK(failure_of("GET /\r\n\r\n") == 400);
  CHECK(failure_of("GET  / HTTP/1.1\r\n\r\n") == 400);
  CHECK(failure_of("GET / HTTP/1.1 extra\r\n\r\n") == 400);
  CHECK(failure_of("G(T / HTTP/1.1\r\n\r\n") == 400);
  CHECK(failure_of("GET nopath HTTP/1.1\r\n\r\n") == 400);
  CHECK(failure_of("GET /a\x01 HTTP/1.1\r\n\r\n") == 400);
  CHECK(failure_of("GET / HTTQ/1.1\r\n\r\n") == 400);
  CHECK(failure_of("GET / HTTP/1.1\r\nNo colon here\r\n\r\n") == 400);
  CHECK(failure_of("GET / HTTP/1.1\r\nName : value\r\n\r\n") == 400);
  CHECK(failure_of("GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n") == 400);
  CHECK(failure_of(std::string("GET / HTTP/1.1\r\nA: b\0c\r\n\r\n", 27)) == 400);
  CHECK(failure_of("GET / HTTP/1.1\r\nA: b\x7f\r\n\r\n") == 400);
  CHECK(failure_of("POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n") == 400);
  CHECK(failure_of("POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd") == 400);
  CHECK(failure_of("POST / HTTP/1.1\r\nContent-Length: 3, 4\r\n\r\nabcd") == 400);
  CHECK(failure_of("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n") == 400);
  CHECK(failure_of("POST / HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n") == 400);
  CHECK(failure_of("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n") == 400);
  CHECK(failure_of("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n") == 400);
  CHECK(failure_of("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n") == 400);
  CHECK(failure_of("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n") == 400);
  CHECK(failure_of("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n") == 501);
  CHECK(failure_of("GET / HTTP/2.0\r\n\r\n") == 505);
}

TEST_CASE("identical repeated Content-Length values are accepted") {
  const auto r = parse_all("POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3, 3\r\n\r\nabc");
  REQUIRE(r.failure == 0);
  CHECK(r.requests.at(0).body == "abc");
}

TEST_CASE("oversized heads get 431 or 414 and oversized bodies 413") {
  const parser_limits limits{.max_header_bytes = 256, .max_body_bytes = 100};
  CHECK(failure_of("GET / HTTP/1.1\r\nX: " + std::string(300, 'a') + "\r\n\r\n", limits) == 431);
  CHECK(failure_of("GET / HTTP/1.1\r\nX: " + std::string(300, 'a'), limits) == 431);
  CHECK(failure_of("GET /" + std::string(300, 'a'), limits) == 414);
  CHECK(failure_of("POST / HTTP/1.1\r\nContent-Length: 101\r\n\r\n", limits) == 413);
  CHECK(failure_of("POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n", limits) == 413);
  CHECK(failure_of("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n40\r\n" + std::string(64, 'a') +
                       "\r\n40\r\n",
                   limits) == 413);
  const auto trailer = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nT: " + std::string(300, 'b') + "\r\n\r\n";
  CHECK(failure_of(trailer, limits) == 431);
  CHECK(parse_all("POST / HTTP/1.1\r\nContent-Length: 100\r\n\r\n" + std::string(100, 'x'), 0, limits).requests.size() == 1);
}

TEST_CASE("splitting the input at every byte boundary changes nothing") {
  const std::string input =
      "POST /v1/chat/completions HTTP/1.1\r\nHost: h\r\nContent-Length: 13\r\n\r\n{\"model\":\"m\"}"
      "\r\n\r\nPUT /chunks HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1;a=b\r\nx\r\n10\r\n0123456789abcdef\r\n0\r\nT: v\r\n\r\n"
      "GET /last HTTP/1.0\nConnection: keep-alive\n\n";
  const auto whole = parse_all(input);
  REQUIRE(whole.failure == 0);
  REQUIRE(whole.requests.size() == 3);
  for (std::size_t cut = 1; cut < input.size(); ++cut) {
    request_parser parser;
    parser.feed(std::string_view(input).substr(0, cut));
    std::vector<request> got;
    request req;
    while (parser.parse(req) == parse_state::complete) got.push_back(req);
    parser.feed(std::string_view(input).substr(cut));
    while (parser.parse(req) == parse_state::complete) got.push_back(req);
    REQUIRE(got.size() == whole.requests.size());
    for (std::size_t i = 0; i < got.size(); ++i) {
      CHECK(got[i].target == whole.requests[i].target);
      CHECK(got[i].body == whole.requests[i].body);
      CHECK(got[i].keep_alive == whole.requests[i].keep_alive);
    }
  }
  for (std::size_t step = 1; step < 8; ++step) CHECK(parse_all(input, step).requests.size() == 3);
}

TEST_CASE("a failed parser stays failed") {
  request_parser parser;
  parser.feed("BAD\r\n");
  request req;
  CHECK(parser.parse(req) == parse_state::failed);
  parser.feed("GET / HTTP/1.1\r\n\r\n");
  CHECK(parser.parse(req) == parse_state::failed);
  CHECK(parser.failure().status == 400);
}

namespace {
struct response_result {
  parse_state state = parse_state::need_more;
  int status = 0;
  std::string body;
  std::vector<std::string> pieces;
};

response_result parse_response(std::string_view input, std::size_t step, bool eof, bool head = false) {
  response_parser parser(head);
  response_result out;
  const auto sink = [&](std::string_view bytes) {
    out.body.append(bytes);
    out.pieces.emplace_back(bytes);
    return true;
  };
  for (std::size_t offset = 0; offset < input.size() && out.state == parse_state::need_more; offset += step) {
    out.state = parser.feed(input.substr(offset, step), sink);
  }
  if (eof && out.state == parse_state::need_more) out.state = parser.finish_at_eof();
  out.status = parser.head().status;
  return out;
}
}  // namespace

TEST_CASE("responses framed by length, chunks and the end of the connection") {
  for (std::size_t step : {1, 3, 1000}) {
    const auto a = parse_response("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloEXTRA", step, false);
    CHECK(a.state == parse_state::complete);
    CHECK(a.status == 200);
    CHECK(a.body == "hello");
    const auto b = parse_response(
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3;x\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        step, false);
    CHECK(b.state == parse_state::complete);
    CHECK(b.status == 201);
    CHECK(b.body == "abcde");
    const auto c = parse_response("HTTP/1.0 200 OK\r\n\r\nuntil close", step, true);
    CHECK(c.state == parse_state::complete);
    CHECK(c.body == "until close");
    const auto d = parse_response("HTTP/1.1 204 No Content\r\n\r\n", step, false);
    CHECK(d.state == parse_state::complete);
    const auto e = parse_response("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", step, false, true);
    CHECK(e.state == parse_state::complete);
  }
}

TEST_CASE("response bodies stream as they arrive and the sink can stop them") {
  const std::string input = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n6\r\nsecond\r\n0\r\n\r\n";
  const auto r = parse_response(input, input.size(), false);
  REQUIRE(r.state == parse_state::complete);
  CHECK(r.pieces == std::vector<std::string>{"first", "second"});

  response_parser parser;
  int calls = 0;
  CHECK(parser.feed(input, [&](std::string_view) { return ++calls < 1; }) == parse_state::failed);
  CHECK(parser.aborted());
  CHECK(calls == 1);
}

TEST_CASE("malformed or truncated responses fail") {
  CHECK(parse_response("HTTP/1.1 2x0 OK\r\n\r\n", 100, false).state == parse_state::failed);
  CHECK(parse_response("SMTP ready\r\n", 100, false).state == parse_state::failed);
  CHECK(parse_response("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc", 100, true).state == parse_state::failed);
  CHECK(parse_response("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", 100, true).state ==
        parse_state::failed);
  CHECK(parse_response("", 100, true).state == parse_state::failed);
}

TEST_CASE("header lookup is case-insensitive and set replaces") {
  headers h;
  h.add("Content-Type", "text/plain");
  h.add("X-A", "1");
  h.set("content-type", "application/json");
  CHECK(h.size() == 2);
  CHECK(*h.find("CONTENT-TYPE") == "application/json");
  CHECK(h.find("missing") == nullptr);
  CHECK(reason_phrase(431) == "Request Header Fields Too Large");
}
