// Tests of the gate's verbs end to end over pipes, with real HTTP backends on loopback:
// streaming, usage records, backend keys, failover, breakers, scale from zero, a backend that
// dies mid-stream, a client that goes away, keep-alive ticks and status.
#include <doctest/doctest.h>

#include <atomic>
#include <mutex>
#include <thread>

#include "chatai/core/json.hpp"
#include "chatai/gate/breaker.hpp"
#include "fake_backend.hpp"
#include "gate_test_util.hpp"

using namespace chatai;
using namespace chatai::gate;
using namespace chatai::gate::testing;
using namespace std::chrono_literals;

TEST_CASE("a request reaches the backend with the job's key and its usage is recorded") {
  gate_fixture fx;
  fake_backend backend;
  fx.add_backend("101", backend.port());
  fx.publish();
  const auto result = run_verb(fx.config, verb::request, chat_request(R"({"model":"smol","messages":[]})"));
  CHECK(result.exit_code == exit_ok);
  CHECK(status_of(result.out) == 200);
  CHECK(result.out.find("Transfer-Encoding: chunked\r\n") != std::string::npos);
  CHECK(result.out.find("\"content\":\"hello\"") != std::string::npos);
  CHECK(result.out.size() >= 5);
  CHECK(result.out.substr(result.out.size() - 5) == "0\r\n\r\n");
  CHECK(backend.last_authorization() == "Bearer secret-of-job-101-0123456789");
  CHECK(backend.last_body() == R"({"model":"smol","messages":[]})");

  const auto lines = usage_lines(fx);
  REQUIRE(lines.size() == 1);
  CHECK(lines[0].find(R"("id":"req-1","user":"u1","service":"chat","backend":"101","status":200,"outcome":"ok")") !=
        std::string::npos);
  CHECK(lines[0].find(R"("prompt_tokens":9,"completion_tokens":2)") != std::string::npos);
  CHECK(lines[0].find("hello") == std::string::npos);
  CHECK(listing(fx.state().inflight_dir()).empty());
}

TEST_CASE("a stream is passed on unchanged and counted through the usage the gate asked for") {
  gate_fixture fx;
  fake_backend backend("101", 0, 4);
  fx.add_backend("101", backend.port());
  fx.publish();
  const auto result = run_verb(fx.config, verb::request, chat_request(R"({"model":"smol","stream":true,"messages":[]})"));
  CHECK(result.exit_code == exit_ok);
  CHECK(status_of(result.out) == 200);
  CHECK(result.out.find("text/event-stream") != std::string::npos);
  CHECK(result.out.find("data: [DONE]") != std::string::npos);
  CHECK(backend.last_body().find(R"("stream_options":{"include_usage":true})") != std::string::npos);
  const auto lines = usage_lines(fx);
  REQUIRE(lines.size() == 1);
  CHECK(lines[0].find(R"("stream":true,"prompt_tokens":9,"completion_tokens":4)") != std::string::npos);
}

TEST_CASE("a dead backend is skipped before anything is written, and its breaker opens") {
  gate_fixture fx;
  fx.config.breaker.failure_threshold = 1;
  fake_backend live("102");
  fx.add_backend("101", closed_port());
  fx.add_backend("102", live.port());
  fx.publish();
  const auto result = run_verb(fx.config, verb::request, chat_request(R"({"model":"smol"})"));
  CHECK(status_of(result.out) == 200);
  CHECK(live.calls() == 1);
  CHECK(breaker(fx.state(), "101", fx.config.breaker).read()->state == breaker_state::open);
  CHECK(breaker(fx.state(), "102", fx.config.breaker).read()->state == breaker_state::closed);

  // With the breaker open, the dead backend is not even tried.
  const auto again = run_verb(fx.config, verb::request, chat_request(R"({"model":"smol"})"));
  CHECK(status_of(again.out) == 200);
  CHECK(live.calls() == 2);
}

TEST_CASE("a 5xx is retried on another backend; the last one's answer is passed on") {
  gate_fixture fx;
  fake_backend failing("101", 500), live("102");
  fx.add_backend("101", failing.port());
  fx.add_backend("102", live.port());
  fx.publish();
  auto result = run_verb(fx.config, verb::request, chat_request(R"({"model":"smol"})"));
  CHECK(status_of(result.out) == 200);
  CHECK(failing.calls() == 1);
  CHECK(live.calls() == 1);

  fx.config.max_attempts = 1;
  fx.reg.backends.pop_back();
  fx.publish();
  result = run_verb(fx.config, verb::request, chat_request(R"({"model":"smol"})"));
  CHECK(status_of(result.out) == 500);
}

TEST_CASE("every backend failing gives 502; none ready gives 503 and a start request") {
  gate_fixture fx;
  fx.add_backend("101", closed_port());
  fx.publish();
  auto result = run_verb(fx.config, verb::request, chat_request(R"({"model":"smol"})"));
  CHECK(status_of(result.out) == 502);

  fx.reg.backends.clear();
  fx.publish();
  result = run_verb(fx.config, verb::request, chat_request(R"({"model":"smol"})"));
  CHECK(status_of(result.out) == 503);
  CHECK(result.out.find("Retry-After: 15\r\n") != std::string::npos);
  CHECK(slurm::take_start_request(fx.state(), "chat").value() == false);

  fx.reg.services[0].can_scale_from_zero = true;
  fx.reg.backends.push_back({"103", "chat", "127.0.0.1", 1, slurm::backend_state::starting, "103.key"});
  fx.publish();
  result = run_verb(fx.config, verb::request, chat_request(R"({"model":"smol"})"));
  CHECK(status_of(result.out) == 503);
  CHECK(result.out.find("Retry-After:") != std::string::npos);
  CHECK(result.out.find("starting") != std::string::npos);
  CHECK(slurm::take_start_request(fx.state(), "chat").value() == true);
  CHECK(usage_lines(fx).back().find(R"("outcome":"no_backend")") != std::string::npos);
}

TEST_CASE("a backend that dies mid-stream ends the stream with an error and counts against its breaker") {
  gate_fixture fx;
  fx.config.breaker.failure_threshold = 1;
  fake_backend backend("101", 0, 1000, 20ms);
  fx.add_backend("101", backend.port());
  fx.publish();
  std::thread killer([&] {
    std::this_thread::sleep_for(300ms);
    backend.stop();
  });
  const auto result = run_verb(fx.config, verb::request, chat_request(R"({"model":"smol","stream":true})"));
  killer.join();
  CHECK(result.exit_code == exit_incomplete);
  CHECK(status_of(result.out) == 200);
  CHECK(result.out.find("\"code\":\"backend_failed\"") != std::string::npos);
  CHECK(result.out.find("0\r\n\r\n") == std::string::npos);
  CHECK(breaker(fx.state(), "101", fx.config.breaker).read()->state == breaker_state::open);
  CHECK(usage_lines(fx).back().find(R"("outcome":"backend_failed")") != std::string::npos);
}

TEST_CASE("when the client goes away the gate returns at once and the backend request is closed") {
  gate_fixture fx;
  fake_backend backend("101", 0, 1000, 20ms);
  fx.add_backend("101", backend.port());
  fx.publish();
  int in[2], out[2];
  REQUIRE(::pipe(in) == 0);
  REQUIRE(::pipe(out) == 0);
  const std::string request = chat_request(R"({"model":"smol","stream":true})");
  REQUIRE(::write(in[1], request.data(), request.size()) == static_cast<ssize_t>(request.size()));
  std::atomic<bool> got_bytes{false};
  std::thread client([&] {
    char buffer[256];
    if (::read(out[0], buffer, sizeof buffer) > 0) got_bytes = true;
    std::this_thread::sleep_for(100ms);
    ::close(in[1]);  // the client hangs up
  });
  const auto start = std::chrono::steady_clock::now();
  const int code = run(fx.config, verb::request, in[0], out[1]);
  const auto took = std::chrono::steady_clock::now() - start;
  client.join();
  CHECK(code == exit_incomplete);
  CHECK(got_bytes);
  CHECK(took < 5s);
  for (int i = 0; i < 100 && !backend.client_gone(); ++i) std::this_thread::sleep_for(20ms);
  CHECK(backend.client_gone());
  CHECK(usage_lines(fx).back().find(R"("outcome":"client_gone")") != std::string::npos);
  ::close(in[0]);
  ::close(out[0]);
  ::close(out[1]);
}

TEST_CASE("keep-alive answers OK and runs the tick at most once per interval") {
  gate_fixture fx;
  const auto ticks = fx.dir.path / "ticks";
  fx.config.tick.interval = std::chrono::seconds(60);
  fx.config.tick.command = {"/bin/sh", "-c", "echo tick >> '" + ticks.string() + "'"};
  auto result = run_verb(fx.config, verb::keep_alive, "");
  CHECK(result.exit_code == exit_ok);
  CHECK(result.out == "OK\n");
  result = run_verb(fx.config, verb::keep_alive, "");
  CHECK(result.out == "OK\n");
  CHECK(read_text(ticks) == "tick\n");

  fx.config.tick.command.clear();
  CHECK(run_verb(fx.config, verb::keep_alive, "").out == "OK\n");
}

TEST_CASE("status describes services, backends and demand") {
  gate_fixture fx;
  fx.add_backend("101", 8000);
  fx.add_backend("102", 8001, slurm::backend_state::starting);
  fx.publish();
  auto marker = slurm::inflight_marker::create(fx.state(), "chat");
  REQUIRE(marker);
  const auto result = run_verb(fx.config, verb::status, "");
  CHECK(result.exit_code == exit_ok);
  auto doc = json::parse(result.out);
  REQUIRE(doc);
  const auto& service = (*doc)["services"][0];
  CHECK(std::string(service["id"].GetString()) == "chat");
  CHECK(service["backends"]["ready"].GetInt() == 1);
  CHECK(service["backends"]["starting"].GetInt() == 1);
  CHECK(service["in_flight"].GetInt() == 1);
  CHECK(result.out.find("127.0.0.1") == std::string::npos);
}

TEST_CASE("beyond its service's cap on requests in flight a request gets a 503 and counts as no demand") {
  gate_fixture fx;
  fx.config.max_in_flight_per_service = 2;
  fx.config.retry_after = 7s;
  fake_backend backend;
  fx.add_backend("101", backend.port());
  fx.reg.services.push_back({"other", {"smol"}, false});
  fx.publish();
  // Two requests of "chat" in flight elsewhere fill its cap.
  std::vector<slurm::inflight_marker> held;
  for (int i = 0; i < 2; ++i) {
    auto marker = slurm::inflight_marker::create(fx.state(), "chat");
    REQUIRE(marker);
    held.push_back(std::move(*marker));
  }
  const auto refused = run_verb(fx.config, verb::request, chat_request(R"({"model":"smol","messages":[]})"));
  CHECK(refused.exit_code == exit_ok);
  CHECK(status_of(refused.out) == 503);
  CHECK(refused.out.find("\r\nRetry-After: 7\r\n") != std::string::npos);
  CHECK(refused.out.find(R"("type":"server_error","param":null,"code":"too_many_requests_in_flight")") !=
        std::string::npos);
  CHECK(backend.calls() == 0);
  // The refused request left no marker behind: demand is what was held before.
  auto counts = slurm::count_inflight(fx.state());
  REQUIRE(counts);
  CHECK(counts->by_service["chat"] == 2);
  CHECK(listing(fx.state().inflight_dir()).size() == 2);
  const auto lines = usage_lines(fx);
  REQUIRE(lines.size() == 1);
  CHECK(lines[0].find(R"("status":503,"outcome":"busy")") != std::string::npos);

  // The cap is per service: another service still has room (and answers 503 only for want of
  // a backend).
  const auto other = run_verb(fx.config, verb::request,
                              header_line("other", "/v1/chat/completions", 2) + "{}");
  CHECK(status_of(other.out) == 503);
  CHECK(other.out.find("no_backend_ready") != std::string::npos);

  // With one place free, the request goes through.
  held.pop_back();
  const auto admitted = run_verb(fx.config, verb::request, chat_request(R"({"model":"smol","messages":[]})"));
  CHECK(status_of(admitted.out) == 200);
  CHECK(backend.calls() == 1);
}

namespace {

// A process on a backend's port that does not hold the job key: it answers the proof with
// `proof_status` and a wrong HMAC, and records whatever reaches it.
class squatter {
 public:
  explicit squatter(int proof_status) {
    http::router routes;
    routes.add("GET", std::string(key_proof::path), [this, proof_status](http::request& req, http::response res) {
      note(req);
      if (proof_status == 200) res.send(200, "text/plain", key_proof::answer("not-the-job-key", "x"));
      else res.send_error(proof_status, "no such route");
    });
    for (const char* method : {"GET", "POST"}) {
      routes.add_prefix(method, "/v1/", [this](http::request& req, http::response res) {
        note(req);
        res.send(200, "application/json", "{}");
      });
    }
    auto started = http::server::start({}, std::move(routes));
    REQUIRE(started);
    server_ = std::move(*started);
  }
  ~squatter() { server_->stop(0ms); }

  std::uint16_t port() const { return server_->port(); }
  std::string received() {
    std::lock_guard lock(mutex_);
    return received_;
  }

 private:
  void note(const http::request& req) {
    std::lock_guard lock(mutex_);
    received_ += req.method + " " + req.target + "\n";
    for (const auto& field : req.headers) received_ += field.name + ": " + field.value + "\n";
    received_ += req.body + "\n";
  }

  std::unique_ptr<http::server> server_;
  std::mutex mutex_;
  std::string received_;
};

}  // namespace

TEST_CASE("a backend that cannot prove the job key gets neither the key nor the prompt") {
  for (const int proof_status : {200, 404}) {
    CAPTURE(proof_status);
    gate_fixture fx;
    fx.config.breaker.failure_threshold = 1;
    squatter fake(proof_status);
    fx.add_backend("101", fake.port());
    fx.publish();
    const std::string body = R"({"model":"smol","messages":[{"role":"user","content":"marker-4c1d9e"}]})";
    const auto result = run_verb(fx.config, verb::request, chat_request(body));
    CHECK(status_of(result.out) == 502);
    CHECK(result.out.find("backend_failed") != std::string::npos);
    const std::string seen = fake.received();
    CHECK(seen.find("GET /chatai/proof") != std::string::npos);
    CHECK(seen.find(job_key("101")) == std::string::npos);
    CHECK(seen.find("marker-4c1d9e") == std::string::npos);
    CHECK(seen.find("uthorization") == std::string::npos);
    CHECK(seen.find("/v1/") == std::string::npos);
    CHECK(breaker(fx.state(), "101", fx.config.breaker).read()->state == breaker_state::open);
    CHECK(usage_lines(fx).back().find(R"("status":502,"outcome":"backend_failed")") != std::string::npos);
  }
}

TEST_CASE("after a squatter fails its proof the request goes to a backend that passes it") {
  gate_fixture fx;
  fx.config.breaker.failure_threshold = 1;
  squatter fake(200);
  fake_backend genuine("102");
  fx.add_backend("101", fake.port());
  fx.add_backend("102", genuine.port());
  fx.publish();
  const auto result = run_verb(fx.config, verb::request, chat_request(R"({"model":"smol","messages":[]})"));
  CHECK(status_of(result.out) == 200);
  CHECK(genuine.calls() == 1);
  CHECK(genuine.last_authorization() == "Bearer " + job_key("102"));
  CHECK(fake.received().find("secret-of-job") == std::string::npos);
  CHECK(breaker(fx.state(), "101", fx.config.breaker).read()->state == breaker_state::open);
  CHECK(breaker(fx.state(), "102", fx.config.breaker).read()->state == breaker_state::closed);
}
