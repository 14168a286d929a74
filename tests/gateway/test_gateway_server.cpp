// Tests of the gateway's request path against a scripted transport (the real one is covered by
// tests/python/test_gateway.py): back-pressure from a client that stops reading reaches the
// transport's window, the usage chunk is stripped from a long stream, and the id is in the header.
#include <doctest/doctest.h>

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "chatai/core/http_client.hpp"
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
