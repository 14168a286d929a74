// What the gateway adds to a request (API key check, limits, accounting, the answer re-emitted
// from the gate's HTTP response), on loopback: the same small chat completion sent straight to
// a trivial backend and through the gateway, whose transport answers at once as the gate would
// with that backend's response. Prints one JSON line per mode with requests/s and p50/p99.
//
// Usage: gateway_bench [CONCURRENCY] [REQUESTS]
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "chatai/core/http_client.hpp"
#include "chatai/core/http_server.hpp"
#include "chatai/core/log.hpp"
#include "chatai/gateway/gateway.hpp"

using namespace chatai;
using clock_type = std::chrono::steady_clock;

namespace {

const std::string answer_body =
    R"({"id":"c","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Hello there"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}})";
const std::string status_doc =
    R"({"v":1,"generation":1,"services":[{"id":"chat","models":["bench"],"can_scale_from_zero":false,"backends":{"ready":1,"starting":0,"draining":0},"open_breakers":0,"in_flight":0}]})";

// A transport whose gate answers at once from its own I/O thread: the status document, OK to a
// keep-alive, and the trivial backend's response to a request.
class instant_transport final : public tunnel::transport {
 public:
  instant_transport() : thread_([this] { loop(); }) {}
  ~instant_transport() override {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

  std::shared_ptr<tunnel::stream> start(tunnel::verb v, std::string, tunnel::stream_callbacks callbacks,
                                        tunnel::request_options) override {
    std::string out;
    if (v == tunnel::verb::status) out = status_doc + "\n";
    else if (v == tunnel::verb::keep_alive) out = "OK\n";
    else
      out = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(answer_body.size()) +
            "\r\n\r\n" + answer_body;
    {
      std::lock_guard lock(mutex_);
      queue_.push_back({std::move(out), std::move(callbacks)});
    }
    cv_.notify_one();
    return std::make_shared<null_stream>();
  }

  tunnel::transport_health health() const override {
    tunnel::transport_health h;
    h.alive = true;
    h.sessions_up = 1;
    return h;
  }

 private:
  struct null_stream final : tunnel::stream {
    void consumed(std::size_t) override {}
    void cancel() override {}
  };
  struct job {
    std::string bytes;
    tunnel::stream_callbacks callbacks;
  };

  void loop() {
    std::unique_lock lock(mutex_);
    for (;;) {
      cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;
      job j = std::move(queue_.front());
      queue_.pop_front();
      lock.unlock();
      j.callbacks.on_data(j.bytes);
      j.callbacks.on_end(ok_status());
      lock.lock();
    }
  }

  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<job> queue_;
  bool stop_ = false;
  std::thread thread_;
};

struct figures {
  double seconds = 0;
  std::vector<double> latencies_ms;
  int failures = 0;
};

figures load(std::uint16_t port, const std::string& key, int concurrency, int total) {
  http::client_request req;
  req.method = "POST";
  req.host = "127.0.0.1";
  req.port = port;
  req.target = "/v1/chat/completions";
  req.headers.add("Content-Type", "application/json");
  if (!key.empty()) req.headers.add("Authorization", "Bearer " + key);
  req.body = R"({"model":"bench","messages":[{"role":"user","content":"hi"}],"max_tokens":3})";

  figures f;
  std::mutex m;
  std::atomic<int> next{0};
  const auto t0 = clock_type::now();
  std::vector<std::thread> workers;
  for (int w = 0; w < concurrency; ++w) {
    workers.emplace_back([&] {
      std::vector<double> mine;
      int failed = 0;
      while (next.fetch_add(1) < total) {
        const auto s = clock_type::now();
        auto r = http::fetch(req);
        mine.push_back(std::chrono::duration<double, std::milli>(clock_type::now() - s).count());
        if (!r || r->status != 200) ++failed;
      }
      std::lock_guard lock(m);
      f.latencies_ms.insert(f.latencies_ms.end(), mine.begin(), mine.end());
      f.failures += failed;
    });
  }
  for (auto& t : workers) t.join();
  f.seconds = std::chrono::duration<double>(clock_type::now() - t0).count();
  std::sort(f.latencies_ms.begin(), f.latencies_ms.end());
  return f;
}

double percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  const auto i = static_cast<std::size_t>(p / 100.0 * static_cast<double>(sorted.size() - 1) + 0.5);
  return sorted[std::min(i, sorted.size() - 1)];
}

void report(const char* mode, const figures& f, int concurrency) {
  std::printf("{\"mode\":\"%s\",\"concurrency\":%d,\"requests\":%zu,\"failures\":%d,\"requests_per_s\":%.0f,"
              "\"p50_ms\":%.3f,\"p99_ms\":%.3f}\n",
              mode, concurrency, f.latencies_ms.size(), f.failures, static_cast<double>(f.latencies_ms.size()) / f.seconds,
              percentile(f.latencies_ms, 50), percentile(f.latencies_ms, 99));
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  const int concurrency = argc > 1 ? std::stoi(argv[1]) : 4;
  const int total = argc > 2 ? std::stoi(argv[2]) : 20000;
  log::set_level(log::level::warn);

  // The trivial backend, hit straight.
  http::router routes;
  routes.add("POST", "/v1/chat/completions",
             [](http::request&, http::response res) { res.send(200, "application/json", answer_body); });
  http::server_options so;
  so.io_threads = 2;
  auto backend = http::server::start(so, std::move(routes));
  if (!backend) {
    std::fprintf(stderr, "%s\n", backend.err().message().c_str());
    return 1;
  }

  const auto dir = std::filesystem::temp_directory_path() / ("chatai-gateway-bench-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  gateway::gateway_config config;
  config.port = 0;
  config.io_threads = 2;
  config.database = dir / "gateway.db";
  config.default_limits = {0, 0};  // unlimited: the limiter is still asked every time
  auto gw = gateway::gateway::create(config, std::make_shared<instant_transport>());
  if (!gw) {
    std::fprintf(stderr, "%s\n", gw.err().message().c_str());
    return 1;
  }
  auto key = (*gw)->keys().create("bench", std::nullopt, {});
  if (!key || !(*gw)->start()) {
    std::fprintf(stderr, "the gateway did not start\n");
    return 1;
  }

  load((*backend)->port(), "", concurrency, total / 10);  // warm-up
  report("direct", load((*backend)->port(), "", concurrency, total), concurrency);
  load((*gw)->port(), key->key, concurrency, total / 10);
  report("gateway", load((*gw)->port(), key->key, concurrency, total), concurrency);

  (*gw)->stop();
  (*backend)->stop(std::chrono::milliseconds(0));
  std::filesystem::remove_all(dir);
  return 0;
}
