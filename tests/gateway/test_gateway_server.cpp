// Tests of the gateway's request path against a scripted transport (the real one is covered by
// tests/python/test_gateway.py): back-pressure from a client that stops reading reaches the
// transport's window, the usage chunk is stripped from a long stream, and the id is in the header;
// the gateway's own content types, token counts it does not believe, and a repeated sign-on header.
#include <doctest/doctest.h>

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <mutex>
#include <optional>
#include <random>
#include <thread>
#include <vector>

#include "chatai/core/http_client.hpp"
#include "chatai/core/json.hpp"
#include "chatai/gateway/gateway.hpp"

using namespace chatai;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

const std::string status_doc =
    R"({"services":[{"id":"chat","models":["m"],"backends":{"ready":1,"starting":0,"draining":0}}]})";
const std::string event = "data: {\"choices\":[{\"delta\":{\"content\":\"" + std::string(1000, 'x') + "\"}}]}\n\n";
const std::string usage_event = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":20000}}\n\n";
const std::string done_event = "data: [DONE]\n\n";
constexpr int events = 20000;  // about 20 MiB, beyond what the server may buffer for one client

// Answers every request with a long event stream, delivering only as far as the request's window
// allows, as the real transports do.
class scripted_transport final : public tunnel::transport {
 public:
  scripted_transport() : thread_([this] { loop(); }) {}
  ~scripted_transport() override {
    stop_ = true;
    thread_.join();
  }

  std::shared_ptr<tunnel::stream> start(tunnel::verb v, std::string input, tunnel::stream_callbacks callbacks,
                                        tunnel::request_options options) override {
    auto r = std::make_shared<running>();
    r->callbacks = std::move(callbacks);
    r->window = options.window;
    if (v == tunnel::verb::status) {
      r->pieces = {status_doc};
    } else if (v == tunnel::verb::keep_alive) {
      r->pieces = {"OK\n"};
    } else if (!answer.empty()) {
      r->pieces = {answer};
    } else {
      last_input = input;
      r->pieces.push_back("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n");
      for (int i = 0; i < events; ++i) r->pieces.push_back(event);
      r->pieces.push_back(usage_event);
      r->pieces.push_back(done_event);
    }
    std::lock_guard lock(mutex_);
    running_.push_back(r);
    return r;
  }

  tunnel::transport_health health() const override { return {}; }

  std::atomic<std::size_t> delivered_total{0};  // answer bytes of requests delivered so far
  std::string last_input;
  std::string answer;  // the gate's whole answer to a request, when set before the gateway starts

 private:
  struct running final : tunnel::stream {
    tunnel::stream_callbacks callbacks;
    std::size_t window = 0;
    std::vector<std::string> pieces;
    std::size_t next = 0;
    std::size_t delivered = 0;
    std::atomic<std::size_t> consumed_bytes{0};
    std::atomic<bool> cancelled{false};
    void consumed(std::size_t n) override { consumed_bytes += n; }
    void cancel() override { cancelled = true; }
  };

  void loop() {
    while (!stop_) {
      std::vector<std::shared_ptr<running>> now;
      {
        std::lock_guard lock(mutex_);
        now = running_;
      }
      for (auto& r : now) {
        while (!r->cancelled && r->next < r->pieces.size() &&
               (r->window == 0 || r->delivered < r->consumed_bytes + r->window)) {
          r->callbacks.on_data(r->pieces[r->next]);
          r->delivered += r->pieces[r->next].size();
          if (r->pieces.size() > 1) delivered_total += r->pieces[r->next].size();
          ++r->next;
        }
        if (r->cancelled || r->next == r->pieces.size()) {
          r->callbacks.on_end(r->cancelled ? chatai::status(error(errc::cancelled, "cancelled")) : ok_status());
          std::lock_guard lock(mutex_);
          std::erase(running_, r);
        }
      }
      std::this_thread::sleep_for(1ms);
    }
  }

  std::mutex mutex_;
  std::vector<std::shared_ptr<running>> running_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

struct temp_dir {
  fs::path path;
  temp_dir() {
    std::random_device rd;
    path = fs::temp_directory_path() / ("chatai-gateway-server-" + std::to_string(::getpid()) + "-" + std::to_string(rd()));
    fs::create_directories(path);
  }
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

// A started gateway over a scripted transport that answers every request with `answer`.
struct answering_gateway {
  temp_dir dir;
  std::shared_ptr<scripted_transport> transport = std::make_shared<scripted_transport>();
  std::unique_ptr<gateway::gateway> gw;
  std::string key;

  explicit answering_gateway(std::string answer, std::optional<gateway::sso_settings> sso = std::nullopt) {
    transport->answer = std::move(answer);
    gateway::gateway_config config;
    config.port = 0;
    config.database = dir.path / "gateway.db";
    config.default_limits = {0, 0};
    config.sso = std::move(sso);
    auto created = gateway::gateway::create(config, transport);
    REQUIRE(created);
    gw = std::move(*created);
    auto k = gw->keys().create("tester", std::nullopt, {});
    REQUIRE(k);
    key = k->key;
    REQUIRE(gw->start());
  }

  http::client_request request(std::string body) const {
    http::client_request req;
    req.method = "POST";
    req.host = "127.0.0.1";
    req.port = gw->port();
    req.target = "/v1/chat/completions";
    req.headers.add("Authorization", "Bearer " + key);
    req.body = std::move(body);
    return req;
  }
};

const std::string chat_body = R"({"model":"m","messages":[{"role":"user","content":"hi"}]})";
const std::string stream_body = R"({"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]})";

std::string whole_answer(std::string_view content_type, std::string_view body, int status = 200) {
  return "HTTP/1.1 " + std::to_string(status) + " X\r\nContent-Type: " + std::string(content_type) +
         "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + std::string(body);
}

// The value of a response's header field, empty when absent.
std::string field(const http::client_response& res, std::string_view name) {
  const std::string* value = res.headers.find(name);
  return value ? *value : std::string();
}

// True when `body` is an OpenAI-style error with `code`.
bool is_error_body(const std::string& body, std::string_view code) {
  auto doc = json::parse(body);
  if (!doc || !doc->IsObject()) return false;
  const auto e = doc->FindMember("error");
  if (e == doc->MemberEnd() || !e->value.IsObject() || e->value.MemberCount() != 4) return false;
  for (const char* field : {"message", "type", "param", "code"})
    if (!e->value.HasMember(field)) return false;
  const auto& c = e->value["code"];
  return c.IsString() && std::string_view(c.GetString(), c.GetStringLength()) == code;
}

}  // namespace

TEST_CASE("a client that stops reading holds the stream back at the transport, and loses nothing") {
  temp_dir dir;
  gateway::gateway_config config;
  config.port = 0;
  config.database = dir.path / "gateway.db";
  config.default_limits = {0, 0};
  auto transport = std::make_shared<scripted_transport>();
  auto gw = gateway::gateway::create(config, transport);
  REQUIRE(gw);
  auto key = (*gw)->keys().create("tester", std::nullopt, {});
  REQUIRE(key);
  REQUIRE((*gw)->start());

  http::client_request req;
  req.method = "POST";
  req.host = "127.0.0.1";
  req.port = (*gw)->port();
  req.target = "/v1/chat/completions";
  req.headers.add("Authorization", "Bearer " + key->key);
  req.body = R"({"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]})";

  std::string body;
  std::string request_id;
  std::size_t delivered_while_stalled = 0;
  bool stalled = false;
  http::response_handlers handlers;
  handlers.on_head = [&](const http::response_head& head) {
    CHECK(head.status == 200);
    if (const auto* id = head.headers.find("X-Request-Id")) request_id = *id;
    return true;
  };
  handlers.on_body = [&](std::string_view piece) {
    body.append(piece);
    if (!stalled) {
      // Stop reading for a while: the socket and the server's buffer fill, then the gateway must
      // stop returning window to the transport.
      stalled = true;
      std::this_thread::sleep_for(1500ms);
      delivered_while_stalled = transport->delivered_total.load();
    }
    return true;
  };
  auto head = http::fetch_streaming(req, handlers);
  REQUIRE(head);
  (*gw)->stop();

  CHECK(request_id.rfind("req-", 0) == 0);
  CHECK(transport->last_input.find(request_id) != std::string::npos);
  CHECK(transport->last_input.find("\"include_usage\":true") != std::string::npos);
  const std::size_t full = events * event.size() + usage_event.size() + done_event.size();
  CHECK(delivered_while_stalled < full / 2);
  CHECK(body.size() == events * event.size() + done_event.size());  // the usage chunk went, nothing else
  CHECK(body.find("\"usage\"") == std::string::npos);
  CHECK(body.substr(body.size() - done_event.size()) == done_event);

  auto usage = (*gw)->keys().usage(std::nullopt);
  REQUIRE(usage);
  REQUIRE(usage->by_user.size() == 1);
  CHECK(usage->by_user[0].completion_tokens == 20000);
}

TEST_CASE("negative or absurd token counts from the cluster are not accounted") {
  answering_gateway g(whole_answer(
      "application/json", R"({"choices":[{"message":{"content":"x"}}],"usage":{"prompt_tokens":-5,"completion_tokens":1099511627777}})"));
  auto res = http::fetch(g.request(chat_body));
  REQUIRE(res);
  CHECK(res->status == 200);
  g.gw->stop();
  auto usage = g.gw->keys().usage(std::nullopt);
  REQUIRE(usage);
  REQUIRE(usage->by_user.size() == 1);
  CHECK(usage->by_user[0].requests == 1);
  CHECK(usage->by_user[0].prompt_tokens == 0);
  CHECK(usage->by_user[0].completion_tokens == 0);
}

TEST_CASE("an API answer has the gateway's content type and nosniff, whatever the cluster sent") {
  SUBCASE("an HTML body for a whole answer becomes a JSON error") {
    answering_gateway g(whole_answer("text/html", "<html><script>alert(1)</script></html>"));
    auto res = http::fetch(g.request(chat_body));
    REQUIRE(res);
    CHECK(res->status == 502);
    CHECK(field(*res, "Content-Type") == "application/json");
    CHECK(field(*res, "X-Content-Type-Options") == "nosniff");
    CHECK(is_error_body(res->body, "backend_failed"));
  }
  SUBCASE("a JSON answer labelled otherwise passes as application/json") {
    const std::string body = R"({"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1}})";
    answering_gateway g(whole_answer("text/plain; charset=utf-8", body));
    auto res = http::fetch(g.request(stream_body));  // asked for a stream, got a whole answer
    REQUIRE(res);
    CHECK(res->status == 200);
    CHECK(field(*res, "Content-Type") == "application/json");
    CHECK(field(*res, "X-Content-Type-Options") == "nosniff");
    CHECK(res->body == body);
  }
  SUBCASE("a stream is text/event-stream without the cluster's parameters") {
    answering_gateway g("HTTP/1.1 200 OK\r\nContent-Type: Text/Event-Stream; charset=latin1\r\nConnection: close\r\n\r\n"
                        "data: {\"choices\":[{\"delta\":{}}]}\n\ndata: [DONE]\n\n");
    auto res = http::fetch(g.request(stream_body));
    REQUIRE(res);
    CHECK(res->status == 200);
    CHECK(field(*res, "Content-Type") == "text/event-stream");
    CHECK(field(*res, "X-Content-Type-Options") == "nosniff");
    CHECK(res->body == "data: {\"choices\":[{\"delta\":{}}]}\n\ndata: [DONE]\n\n");
  }
  SUBCASE("a stream the client did not ask for is refused") {
    answering_gateway g("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\ndata: [DONE]\n\n");
    auto res = http::fetch(g.request(chat_body));
    REQUIRE(res);
    CHECK(res->status == 502);
    CHECK(field(*res, "Content-Type") == "application/json");
    CHECK(field(*res, "X-Content-Type-Options") == "nosniff");
    CHECK(is_error_body(res->body, "backend_failed"));
  }
  SUBCASE("the gateway's own refusals") {
    answering_gateway g(whole_answer("application/json", "{}"));
    auto req = g.request(chat_body);
    req.headers.clear();
    auto res = http::fetch(req);
    REQUIRE(res);
    CHECK(res->status == 401);
    CHECK(field(*res, "Content-Type") == "application/json");
    CHECK(field(*res, "X-Content-Type-Options") == "nosniff");
    CHECK(is_error_body(res->body, "invalid_api_key"));
  }
}

TEST_CASE("a trusted proxy's request that names the user twice is refused") {
  answering_gateway g(whole_answer("application/json", R"({"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1}})"),
                      gateway::sso_settings{"X-Remote-User", {"127.0.0.1"}});
  http::client_request req = g.request(chat_body);
  req.headers.clear();
  req.headers.add("X-Remote-User", "alice");
  auto once = http::fetch(req);
  REQUIRE(once);
  CHECK(once->status == 200);

  for (const char* second : {"X-Remote-User", "x-remote-user"}) {
    CAPTURE(second);
    for (const char* value : {"mallory", "alice", ""}) {
      CAPTURE(value);
      http::client_request twice = req;
      twice.headers.add(second, value);
      auto res = http::fetch(twice);
      REQUIRE(res);
      CHECK(res->status == 400);
      CHECK(field(*res, "Content-Type") == "application/json");
      CHECK(is_error_body(res->body, "duplicate_header"));
    }
  }
  // An API key does not make the repeated header acceptable.
  http::client_request with_key = g.request(chat_body);
  with_key.headers.add("X-Remote-User", "alice");
  with_key.headers.add("X-Remote-User", "mallory");
  auto res = http::fetch(with_key);
  REQUIRE(res);
  CHECK(res->status == 400);
  g.gw->stop();
  auto usage = g.gw->keys().usage(std::nullopt);
  REQUIRE(usage);
  REQUIRE(usage->by_user.size() == 1);
  CHECK(usage->by_user[0].user == "alice");
  CHECK(usage->by_user[0].requests == 1);
}
