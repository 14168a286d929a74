// A server with trivial handlers on loopback, to be driven by a load generator such as wrk
// (see http_server_bench.sh), and the trivial backend of benchmarks/tunnel_latency.py (a small
// chat completion answer, whatever the request). Prints the port, then serves until SIGINT or
// SIGTERM.
#include <pthread.h>
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "chatai/core/http_server.hpp"

int main(int argc, char** argv) {
  chatai::http::server_options options;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--port") == 0) {
      options.port = static_cast<std::uint16_t>(std::atoi(argv[i + 1]));
    } else if (std::strcmp(argv[i], "--threads") == 0) {
      options.io_threads = std::atoi(argv[i + 1]);
    } else {
      std::fprintf(stderr, "usage: %s [--port N] [--threads N]\n", argv[0]);
      return 2;
    }
  }

  // Block the signals before the I/O threads start so that only sigwait() sees them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  chatai::http::router routes;
  routes.add("GET", "/", [](chatai::http::request&, chatai::http::response res) {
    res.send(200, "text/plain", "hello, world\n");
  });
  routes.add("POST", "/v1/chat/completions", [](chatai::http::request&, chatai::http::response res) {
    res.send(200, "application/json",
             R"({"choices":[{"message":{"content":"hello"}}],"usage":{"prompt_tokens":7,"completion_tokens":1}})");
  });
  auto srv = chatai::http::server::start(options, std::move(routes));
  if (!srv) {
    std::fprintf(stderr, "%s\n", srv.err().message().c_str());
    return 1;
  }
  std::printf("listening on 127.0.0.1:%u with %d I/O thread(s)\n", (*srv)->port(), options.io_threads);
  std::fflush(stdout);

  int received = 0;
  sigwait(&signals, &received);
  (*srv)->stop(std::chrono::seconds(1));
  return 0;
}
