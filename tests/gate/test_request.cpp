// Tests of the gate's config and strict request reader: a table of hostile inputs (the known
// weaknesses of the system chatai replaces among them), each refused with its 4xx and with
// nothing created or contacted.
#include <doctest/doctest.h>

#include <atomic>

#include "chatai/core/http_server.hpp"
#include "chatai/gate/request.hpp"
#include "chatai/gate/usage.hpp"
#include "gate_test_util.hpp"

using namespace chatai;
using namespace chatai::gate;
using namespace chatai::gate::testing;

TEST_CASE("the config file is read strictly") {
  auto c = parse_config(R"({"state_dir":"/var/lib/chatai"})", "gate.json");
  REQUIRE(c);
  CHECK(c->state_dir == "/var/lib/chatai");
  CHECK(c->routes.size() == 4);
  CHECK(c->max_header_bytes == 16 * 1024);
  CHECK(c->max_in_flight_per_service == 128);

  c = parse_config(R"({"state_dir":"/s","routes":["POST /v1/chat/completions"],"headers":{"accept":["text/event-stream"]},
    "limits":{"max_body_bytes":1000,"max_in_flight_per_service":7},"backend":{"max_attempts":3},"breaker":{"failure_threshold":5,"cooldown_ms":100},
    "tick":{"interval_s":5,"command":["/usr/bin/true"]}})", "gate.json");
  REQUIRE(c);
  CHECK(c->routes.size() == 1);
  CHECK(c->headers.size() == 1);
  CHECK(c->max_body_bytes == 1000);
  CHECK(c->max_in_flight_per_service == 7);
  CHECK(c->max_attempts == 3);
  CHECK(c->breaker.failure_threshold == 5);
  CHECK(c->tick.command == std::vector<std::string>{"/usr/bin/true"});

  struct row {
    const char* text;
    const char* expected;
  };
  for (const auto& [text, expected] : {
           row{R"({})", "state_dir"},
           row{R"({"state_dir":"relative"})", "absolute"},
           row{R"({"state_dir":"/s","extra":1})", "unknown field"},
           row{R"({"state_dir":"/s","state_dir":"/t"})", "more than once"},
           row{R"({"state_dir":"/s","routes":["DELETE /v1/x"]})", "routes"},
           row{R"({"state_dir":"/s","routes":["POST /v1/../admin"]})", "routes"},
           row{R"({"state_dir":"/s","headers":{"authorization":["x"]}})", "set by the gate"},
           row{R"({"state_dir":"/s","headers":{"Accept":["x"]}})", "lower-case"},
           row{R"({"state_dir":"/s","limits":{"max_header_bytes":20000}})", "between"},
           row{R"({"state_dir":"/s","limits":{"max_in_flight_per_service":0}})", "limits.max_in_flight_per_service"},
           row{R"({"state_dir":"/s","limits":{"max_in_flight_per_service":100001}})", "between 1 and 100000"},
           row{R"({"state_dir":"/s","limits":{"max_in_flight_per_service":"8"}})", "max_in_flight_per_service"},
           row{R"({"state_dir":"/s","tick":{"command":["sh","-c","x"]}})", "absolute"},
       }) {
    CAPTURE(text);
    auto bad = parse_config(text, "gate.json");
    REQUIRE_FALSE(bad);
    CHECK(bad.err().message().find(expected) != std::string::npos);
  }
}

TEST_CASE("only the four commands are accepted, exactly") {
  CHECK(proto::parse_command("keep-alive").value() == verb::keep_alive);
  CHECK(proto::parse_command("status").value() == verb::status);
  CHECK(proto::parse_command("request").value() == verb::request);
  CHECK(proto::parse_command("session").value() == verb::session);
  for (const char* bad : {"", " request", "request ", "request\n", "REQUEST", "request x", "keep-alive; sh",
                          "status && id", "sftp", "internal-sftp", "/bin/sh", "scp -t /tmp"}) {
    CAPTURE(bad);
    CHECK_FALSE(proto::parse_command(bad));
  }
  CHECK_FALSE(proto::parse_command(nullptr));
}

TEST_CASE("a well-formed request is read whole") {
  gate_config config;
  const std::string body = R"({"model":"smol","messages":[]})";
  auto r = parse_request(chat_request(body, R"(,"headers":{"Content-Type":"application/json","accept":"text/event-stream"})"),
                         config);
  REQUIRE(r);
  CHECK(r->head.id == "req-1");
  CHECK(r->head.user == "u1");
  CHECK(r->head.service == "chat");
  CHECK(r->head.headers.size() == 2);
  CHECK(r->head.headers[0].first == "content-type");
  CHECK(r->body == body);
  CHECK(r->model == "smol");
  CHECK(r->head.affinity.empty());

  auto with_key = parse_request(chat_request(body, R"(,"affinity":"0123456789abcdef")"), config);
  REQUIRE(with_key);
  CHECK(with_key->head.affinity == "0123456789abcdef");
  for (const char* bad : {R"(,"affinity":"ABCDEF")", R"(,"affinity":"0123456789abcdef0123456789abcdef0")",
                          R"(,"affinity":7)"}) {
    CAPTURE(bad);
    auto refused = parse_request(chat_request(body, bad), config);
    REQUIRE_FALSE(refused);
    CHECK(refused.err().message().find("affinity") != std::string::npos);
  }
}

namespace {
std::string line_with(const std::string& fields) { return "{\"v\":1,\"id\":\"r\",\"method\":\"POST\"" + fields + "}\n"; }
}  // namespace

TEST_CASE("hostile requests get their 4xx and create or contact nothing") {
  gate_fixture fx;
  std::atomic<int> backend_calls{0};
  http::router routes;
  for (const char* path : {"/v1/chat/completions", "/v1/completions", "/v1/models", "/x"}) {
    routes.add_prefix("POST", path, [&](http::request&, http::response res) {
      ++backend_calls;
      res.send(200, "application/json", "{}");
    });
  }
  auto server = http::server::start({}, std::move(routes));
  REQUIRE(server);
  fx.add_backend("101", (*server)->port());
  fx.publish();
  const auto before = listing(fx.config.state_dir);
  fx.config.max_body_bytes = 4096;

  const std::string ok_body = R"({"model":"smol","messages":[]})";
  const std::string big(20000, 'a');
  struct row {
    std::string name;
    std::string input;
    int status;
  };
  const std::vector<row> table = {
      // The old validation regexes let every value through; these are anchored.
      {"service with a space", header_line("chat x", "/v1/chat/completions", 2) + "{}", 400},
      {"service with a shell metacharacter", header_line("chat;id", "/v1/chat/completions", 2) + "{}", 400},
      {"service as a path", header_line("../../x", "/v1/chat/completions", 2) + "{}", 400},
      {"service dot-dot", header_line("..", "/v1/chat/completions", 2) + "{}", 400},
      {"empty service", header_line("", "/v1/chat/completions", 2) + "{}", 400},
      {"unknown service", header_line("other", "/v1/chat/completions", 2) + "{}", 404},
      // A model name chose which file the old script sourced.
      {"model as a path", chat_request(R"({"model":"../../x","messages":[]})"), 404},
      {"model with a newline", chat_request(R"({"model":"smol\n","messages":[]})"), 400},
      // A request path like @host:80/... sent the old request to any host.
      {"path with an authority", header_line("chat", "@evil.example:80/v1/chat/completions", 2) + "{}", 400},
      {"path as a URL", header_line("chat", "http://evil.example/v1/chat/completions", 2) + "{}", 400},
      {"path with two slashes", header_line("chat", "//evil.example/v1/chat/completions", 2) + "{}", 400},
      {"path climbing out", header_line("chat", "/v1/chat/completions/../../admin", 2) + "{}", 400},
      {"path with a query", header_line("chat", "/v1/chat/completions?x=1", 2) + "{}", 400},
      {"path not a route", header_line("chat", "/x", 2) + "{}", 400},
      // A header value containing " -d " replaced the old body.
      {"header value with -d", chat_request(ok_body, R"(,"headers":{"content-type":"application/json -d {\"a\":1}"})"), 400},
      // Client headers such as Authorization were visible in ps.
      {"authorization header", chat_request(ok_body, R"(,"headers":{"authorization":"Bearer x"})"), 400},
      {"host header", chat_request(ok_body, R"(,"headers":{"host":"evil.example"})"), 400},
      {"header name with CRLF", chat_request(ok_body, R"(,"headers":{"accept\r\nx-a":"*/*"})"), 400},
      {"header value with CRLF", chat_request(ok_body, R"(,"headers":{"accept":"*/*\r\nHost: evil"})"), 400},
      {"header twice", chat_request(ok_body, R"(,"headers":{"accept":"*/*","Accept":"*/*"})"), 400},
      {"header not a string", chat_request(ok_body, R"(,"headers":{"accept":1})"), 400},
      {"headers not an object", chat_request(ok_body, R"(,"headers":["accept"])"), 400},
      // Control characters and NUL.
      {"NUL escaped in id", R"({"v":1,"id":"a\u0000b","service":"chat","method":"POST","path":"/v1/chat/completions","body_length":2})"
                            "\n{}", 400},
      {"raw NUL in the line", std::string("{\"v\":1,\"id\":\"a\0b\"}\n", 20), 400},
      {"raw tab in the line", "{\"v\":1,\t\"id\":\"a\"}\n", 400},
      {"CRLF line end", header_line("chat", "/v1/chat/completions", 2).insert(header_line("chat", "/v1/chat/completions", 2).size() - 1, "\r") + "{}", 400},
      {"invalid UTF-8", "{\"v\":1,\"id\":\"\xff\xfe\"}\n", 400},
      {"overlong UTF-8", "{\"v\":1,\"id\":\"\xc0\xaf\"}\n", 400},
      {"invalid UTF-8 in the body", chat_request("{\"model\":\"smol\",\"x\":\"\xed\xa0\x80\"}"), 400},
      // Sizes.
      {"header line over 16 KiB", "{\"v\":1,\"id\":\"" + big + "\"}\n", 413},
      {"no newline within 16 KiB", big, 413},
      {"body over the limit", header_line("chat", "/v1/chat/completions", 5000), 413},
      {"huge body length", header_line("chat", "/v1/chat/completions", 0).replace(header_line("chat", "/v1/chat/completions", 0).find("\"body_length\":0"), 15, "\"body_length\":99999999999999999"), 413},
      {"id too long", "{\"v\":1,\"id\":\"" + std::string(129, 'a') + "\",\"service\":\"chat\",\"method\":\"POST\",\"path\":\"/v1/chat/completions\",\"body_length\":0}\n", 400},
      {"header value too long", chat_request(ok_body, ",\"headers\":{\"accept\":\"" + std::string(300, 'a') + "\"}"), 400},
      {"too many headers", chat_request(ok_body, [] {
         std::string h = ",\"headers\":{";
         for (int i = 0; i < 17; ++i) h += (i ? ",\"x-" : "\"x-") + std::to_string(i) + "\":\"a\"";
         return h + "}";
       }()), 400},
      {"nested too deeply", "{\"v\":1,\"id\":[[[[1]]]]}\n", 400},
      {"body nested too deeply", chat_request(std::string(200, '[') + std::string(200, ']')), 400},
      // Body lengths.
      {"body shorter than announced", header_line("chat", "/v1/chat/completions", 40) + "{}", 400},
      {"body longer than announced", header_line("chat", "/v1/chat/completions", 1) + "{}", 400},
      {"pipelined garbage after the body", chat_request(ok_body) + "GET / HTTP/1.1\r\n\r\n", 400},
      {"a second request after the body", chat_request(ok_body) + chat_request(ok_body), 400},
      {"negative body length", header_line("chat", "/v1/chat/completions", 0).replace(header_line("chat", "/v1/chat/completions", 0).find(":0}"), 3, ":-1}"), 400},
      {"body length as a string", line_with(R"(,"service":"chat","path":"/v1/chat/completions","body_length":"2")") + "{}", 400},
      {"body length as a fraction", line_with(R"(,"service":"chat","path":"/v1/chat/completions","body_length":1.5)") + "{}", 400},
      {"body length with an exponent", line_with(R"(,"service":"chat","path":"/v1/chat/completions","body_length":2e0)") + "{}", 400},
      {"body not JSON", chat_request("not json"), 400},
      {"body not an object", chat_request("[1,2]"), 400},
      {"empty input", "", 400},
      {"only a newline", "\n", 400},
      // Shape of the header line.
      {"not an object", "[1]\n", 400},
      {"unknown key", line_with(R"(,"service":"chat","path":"/v1/chat/completions","body_length":0,"shell":"sh")"), 400},
      {"duplicate key", line_with(R"(,"service":"chat","service":"other","path":"/v1/chat/completions","body_length":0)"), 400},
      {"missing path", line_with(R"(,"service":"chat","body_length":0)"), 400},
      {"version 2", R"({"v":2,"id":"r","service":"chat","method":"POST","path":"/v1/chat/completions","body_length":0})" "\n", 400},
      {"version as a string", R"({"v":"1","id":"r","service":"chat","method":"POST","path":"/v1/chat/completions","body_length":0})" "\n", 400},
      {"service not a string", line_with(R"(,"service":["chat"],"path":"/v1/chat/completions","body_length":0)"), 400},
      {"method DELETE", R"({"v":1,"id":"r","service":"chat","method":"DELETE","path":"/v1/chat/completions","body_length":0})" "\n", 400},
      {"method in lower case", R"({"v":1,"id":"r","service":"chat","method":"post","path":"/v1/chat/completions","body_length":0})" "\n", 400},
      {"GET of a POST route", R"({"v":1,"id":"r","service":"chat","method":"GET","path":"/v1/chat/completions","body_length":0})" "\n", 400},
      {"GET with a body", R"({"v":1,"id":"r","service":"chat","method":"GET","path":"/v1/models","body_length":2})" "\n{}", 400},
      {"user with a slash", chat_request(ok_body).replace(chat_request(ok_body).find("\"u1\""), 4, "\"a/b\""), 400},
      {"stream_options not an object", chat_request(R"({"model":"smol","stream":true,"stream_options":"x"})"), 400},
      {"body with a key twice", chat_request(R"({"model":"smol","stream":true,"stream":false})"), 400},
  };
  for (const auto& r : table) {
    CAPTURE(r.name);
    const auto result = run_verb(fx.config, verb::request, r.input, false);
    CHECK(status_of(result.out) == r.status);
    CHECK(result.out.find("\"error\":{\"message\":") != std::string::npos);
    CHECK(result.exit_code == exit_ok);
  }
  CHECK(backend_calls == 0);
  CHECK(listing(fx.config.state_dir) == before);
}

TEST_CASE("a request that stops arriving times out with 408") {
  gate_fixture fx;
  fx.config.read_timeout = std::chrono::milliseconds(200);
  const auto result = run_verb(fx.config, verb::request, "{\"v\":1,", true);
  CHECK(status_of(result.out) == 408);
}

TEST_CASE("streaming requests ask the backend for usage; others pass unchanged") {
  auto p = prepare_body(R"({"model":"m","stream":true,"messages":[]})");
  REQUIRE(p);
  CHECK(p->stream);
  CHECK(p->body.find(R"("stream_options":{"include_usage":true})") != std::string::npos);

  p = prepare_body(R"({"model":"m","stream":true,"stream_options":{"include_usage":false}})");
  REQUIRE(p);
  CHECK(p->body.find(R"("include_usage":true)") != std::string::npos);

  const std::string asked = R"({"stream":true,"stream_options":{"include_usage":true},"x":1.25e3})";
  p = prepare_body(asked);
  REQUIRE(p);
  CHECK(p->body == asked);

  p = prepare_body(R"({"stream":true,"stream_options":{"include_usage":true,"include_usage":false}})");
  REQUIRE(p);
  CHECK(p->body == R"({"stream":true,"stream_options":{"include_usage":true}})");

  p = prepare_body(R"({"stream":true,"stream_options":null})");
  REQUIRE(p);
  CHECK(p->body == R"({"stream":true,"stream_options":{"include_usage":true}})");

  const std::string plain = R"({"model":"m",  "stream":false, "n": 1.0})";
  p = prepare_body(plain);
  REQUIRE(p);
  CHECK_FALSE(p->stream);
  CHECK(p->body == plain);
}

TEST_CASE("token counts are found in event streams and JSON bodies") {
  usage_scanner sse(true);
  sse.feed("data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\ndata: {\"choices\":[],\"us");
  sse.feed("age\":{\"prompt_tokens\":12,\"completion_tokens\":3}}\r\n\r\ndata: [DONE]\n\n");
  sse.finish();
  CHECK(sse.prompt_tokens() == 12);
  CHECK(sse.completion_tokens() == 3);

  usage_scanner body(false);
  body.feed("{\"choices\":[],\"usage\":{\"prompt_tokens\":5,");
  body.feed("\"completion_tokens\":7,\"total_tokens\":12}}");
  body.finish();
  CHECK(body.prompt_tokens() == 5);
  CHECK(body.completion_tokens() == 7);

  usage_scanner garbage(true);
  garbage.feed("data: {not json\n\ndata: [[[[\n\n");
  garbage.finish();
  CHECK_FALSE(garbage.prompt_tokens());
}

TEST_CASE("negative or absurd token counts are taken for absent") {
  usage_scanner body(false);
  body.feed(R"({"choices":[],"usage":{"prompt_tokens":-5,"completion_tokens":1099511627777}})");
  body.finish();
  CHECK_FALSE(body.prompt_tokens());
  CHECK_FALSE(body.completion_tokens());

  usage_scanner edge(false);
  edge.feed(R"({"usage":{"prompt_tokens":0,"completion_tokens":1099511627776}})");
  edge.finish();
  CHECK(edge.prompt_tokens() == 0);
  CHECK(edge.completion_tokens() == (std::int64_t(1) << 40));

  // A bad count later in a stream does not replace a good one, nor does a good one stay unseen.
  usage_scanner sse(true);
  sse.feed("data: {\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":2}}\n\n");
  sse.feed("data: {\"choices\":[],\"usage\":{\"prompt_tokens\":-1,\"completion_tokens\":-9223372036854775807}}\n\n");
  sse.feed("data: [DONE]\n\n");
  sse.finish();
  CHECK(sse.prompt_tokens() == 4);
  CHECK(sse.completion_tokens() == 2);

  usage_scanner unsigned_big(false);
  unsigned_big.feed(R"({"usage":{"prompt_tokens":18446744073709551615,"completion_tokens":3}})");
  unsigned_big.finish();
  CHECK_FALSE(unsigned_big.prompt_tokens());
  CHECK(unsigned_big.completion_tokens() == 3);
}

TEST_CASE("usage records are JSON lines without any text of the exchange") {
  usage_record rec;
  rec.id = "r\"1";
  rec.user = "u";
  rec.service = "chat";
  rec.backend = "101";
  rec.status = 200;
  rec.outcome = "ok";
  rec.prompt_tokens = 3;
  const std::string line = rec.to_json_line();
  CHECK(line.back() == '\n');
  CHECK(line.find(R"("id":"r\"1")") != std::string::npos);
  CHECK(line.find(R"("prompt_tokens":3,"completion_tokens":null)") != std::string::npos);
}
