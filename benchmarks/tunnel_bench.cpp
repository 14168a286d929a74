// Requests per second and latency of small requests through the SSH tunnel (tunnel -> sshd ->
// chatai-gate -> backend), with a fixed number of requests in flight. Prints one JSON line.
// Driven by benchmarks/tunnel_latency.py, which sets up sshd, the gate and the backend.
// With `stream`, each request asks for a stream and counts as failed unless its answer ends
// with the stream's "data: [DONE]" and the chunked body's last chunk (intact).
//
// Usage: tunnel_bench HOST PORT USER KEY KNOWN_HOSTS SERVICE CONCURRENCY REQUESTS [SESSIONS CHANNELS [stream]]
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "chatai/tunnel/ssh_transport.hpp"

using namespace chatai;
using clock_type = std::chrono::steady_clock;

int main(int argc, char** argv) {
  if (argc < 9) {
    std::fprintf(stderr, "usage: %s HOST PORT USER KEY KNOWN_HOSTS SERVICE CONCURRENCY REQUESTS [SESSIONS CHANNELS]\n", argv[0]);
    return 2;
  }
  tunnel::ssh_options o;
  o.host = argv[1];
  o.port = std::stoi(argv[2]);
  o.user = argv[3];
  o.key_file = argv[4];
  o.known_hosts = argv[5];
  o.keep_alive_interval = std::chrono::milliseconds(0);
  if (argc > 10) {
    o.sessions = std::stoi(argv[9]);
    o.channels_per_session = std::stoi(argv[10]);
  }
  const bool stream = argc > 11 && std::string(argv[11]) == "stream";
  const std::string service = argv[6];
  const int concurrency = std::stoi(argv[7]);
  const int total = std::stoi(argv[8]);
  auto t = tunnel::ssh_transport::create(o);
  if (!t) {
    std::fprintf(stderr, "%s\n", t.err().message().c_str());
    return 1;
  }
  if (auto st = (*t)->wait_connected(std::chrono::seconds(10)); !st) {
    std::fprintf(stderr, "%s\n", st.err().message().c_str());
    return 1;
  }
  // Let the whole pool come up before measuring.
  for (int i = 0; i < 100 && (*t)->health().sessions_up < o.sessions; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));

  tunnel::gate_request r;
  r.id = "bench";
  r.service = service;
  r.body = stream ? R"({"model":"smol","stream":true,"messages":[{"role":"user","content":"hi"}]})"
                  : R"({"model":"smol","messages":[{"role":"user","content":"hi"}]})";

  std::mutex m;
  std::condition_variable cv;
  std::vector<double> latencies_ms;
  int started = 0, finished = 0, failed = 0;
  std::function<void()> launch;
  launch = [&] {
    const auto begin = clock_type::now();
    auto bytes = std::make_shared<std::size_t>(0);
    auto tail = std::make_shared<std::string>();  // the answer's last bytes
    (*t)->request(r, {[bytes, tail](std::string_view b) {
                        *bytes += b.size();
                        tail->append(b);
                        if (tail->size() > 64) tail->erase(0, tail->size() - 64);
                      },
                      [&, begin, bytes, tail](const status& outcome) {
                        const double ms = std::chrono::duration<double, std::milli>(clock_type::now() - begin).count();
                        const bool intact = !stream || tail->find("data: [DONE]") != std::string::npos;
                        const bool ended = tail->size() >= 5 && tail->compare(tail->size() - 5, 5, "0\r\n\r\n") == 0;
                        bool more;
                        {
                          std::lock_guard lock(m);
                          latencies_ms.push_back(ms);
                          if (!outcome || *bytes == 0 || !intact || !ended) {
                            if (failed++ < 3)
                              std::fprintf(stderr, "failed: %s; %zu bytes, ending \"%s\"\n",
                                           outcome ? "no error" : outcome.err().message().c_str(), *bytes,
                                           tail->substr(tail->size() > 40 ? tail->size() - 40 : 0).c_str());
                          }
                          ++finished;
                          more = started < total;
                          if (more) ++started;
                        }
                        cv.notify_all();
                        if (more) launch();
                      }});
  };
  const auto begin = clock_type::now();
  {
    std::lock_guard lock(m);
    started = std::min(concurrency, total);
  }
  for (int i = 0; i < std::min(concurrency, total); ++i) launch();
  {
    std::unique_lock lock(m);
    cv.wait(lock, [&] { return finished == total; });
  }
  const double seconds = std::chrono::duration<double>(clock_type::now() - begin).count();
  std::sort(latencies_ms.begin(), latencies_ms.end());
  auto pct = [&](double p) { return latencies_ms[std::min(latencies_ms.size() - 1, static_cast<std::size_t>(p / 100 * (latencies_ms.size() - 1) + 0.5))]; };
  // This process's CPU time (the libssh client side) from start to end, connecting included.
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  const double cpu_ms = (usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) * 1e3 +
                        (usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e3;
  std::printf("{\"concurrency\":%d,\"requests\":%d,\"failed\":%d,\"rps\":%.1f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,"
              "\"cpu_ms\":%.1f}\n",
              concurrency, total, failed, total / seconds, pct(50), pct(99), cpu_ms);
  return failed ? 1 : 0;
}
