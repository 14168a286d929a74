// A fake OpenAI-like backend for the gate's tests, and loopback helpers.
#pragma once

#include <doctest/doctest.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <sstream>
#include <thread>
#include <vector>

#include <asio.hpp>

#include "chatai/core/http_server.hpp"
#include "gate_test_util.hpp"

namespace chatai::gate::testing {

using namespace std::chrono_literals;

// An OpenAI-like backend of job `job`: it answers the job key proof, then JSON, or server-sent
// events (one per `event_gap`, `events` of them, then a usage chunk) when the body asks for a
// stream.
class fake_backend {
 public:
  explicit fake_backend(const std::string& job = "101", int fail_status = 0, int events = 3,
                        std::chrono::milliseconds event_gap = 10ms) {
    http::router routes;
    add_key_proof_route(routes, job_key(job), &proofs_);
    routes.add("POST", "/v1/chat/completions", [=, this](http::request& req, http::response res) {
      {
        std::lock_guard lock(mutex_);
        ++calls_;
        last_body_ = req.body;
        const std::string* auth = req.headers.find("authorization");
        last_authorization_ = auth ? *auth : "";
      }
      if (fail_status) {
        res.send_error(fail_status, "broken");
        return;
      }
      if (req.body.find("\"stream\":true") == std::string::npos) {
        res.send(200, "application/json",
                 R"({"choices":[{"message":{"content":"hello"}}],"usage":{"prompt_tokens":9,"completion_tokens":2}})");
        return;
      }
      std::lock_guard lock(mutex_);
      streams_.emplace_back([this, res, events, event_gap] {
        http::sse_writer sse(res);
        bool ok = sse.begin();
        for (int i = 0; ok && i < events; ++i) {
          std::this_thread::sleep_for(event_gap);
          ok = sse.event(R"({"choices":[{"delta":{"content":"tok"}}],"usage":null})");
        }
        if (!ok) {
          client_gone_ = true;
          return;
        }
        sse.event(R"({"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":)" + std::to_string(events) + "}}");
        sse.event("[DONE]");
        sse.finish();
      });
    });
    auto started = http::server::start({}, std::move(routes));
    REQUIRE(started);
    server_ = std::move(*started);
  }
  ~fake_backend() {
    server_->stop(0ms);
    for (auto& t : streams_) t.join();
  }

  std::uint16_t port() const { return server_->port(); }
  void stop() { server_->stop(0ms); }
  int calls() {
    std::lock_guard lock(mutex_);
    return calls_;
  }
  std::string last_body() {
    std::lock_guard lock(mutex_);
    return last_body_;
  }
  std::string last_authorization() {
    std::lock_guard lock(mutex_);
    return last_authorization_;
  }
  bool client_gone() const { return client_gone_; }
  int proofs() const { return proofs_; }

 private:
  std::unique_ptr<http::server> server_;
  std::mutex mutex_;
  std::vector<std::thread> streams_;
  int calls_ = 0;
  std::string last_body_;
  std::string last_authorization_;
  std::atomic<bool> client_gone_{false};
  std::atomic<int> proofs_{0};
};

// A loopback port on which nothing listens.
inline std::uint16_t closed_port() {
  asio::io_context io;
  asio::ip::tcp::acceptor acceptor(io, {asio::ip::make_address("127.0.0.1"), 0});
  return acceptor.local_endpoint().port();
}

inline std::vector<std::string> usage_lines(const gate_fixture& fx) {
  std::vector<std::string> lines;
  std::istringstream in(read_text(fx.state().usage_file()));
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

}  // namespace chatai::gate::testing
