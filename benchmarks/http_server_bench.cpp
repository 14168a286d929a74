// A server with trivial handlers on loopback, to be driven by a load generator such as wrk
// (see http_server_bench.sh), and the trivial backend of benchmarks/tunnel_latency.py (a small
// chat completion answer, whatever the request; with --key-file it answers the gate's job key
// proof for that key, as chatai serve does). Prints the port, then serves until SIGINT or
// SIGTERM.
#include <pthread.h>
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

#include "chatai/core/http_server.hpp"
#include "chatai/core/key_proof.hpp"

int main(int argc, char** argv) {
  chatai::http::server_options options;
  std::string key;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--port") == 0) {
      options.port = static_cast<std::uint16_t>(std::atoi(argv[i + 1]));
    } else if (std::strcmp(argv[i], "--threads") == 0) {
      options.io_threads = std::atoi(argv[i + 1]);
    } else if (std::strcmp(argv[i], "--key-file") == 0) {
      std::ifstream in(argv[i + 1]);
      if (!std::getline(in, key) || key.empty()) {
        std::fprintf(stderr, "%s: no key\n", argv[i + 1]);
        return 2;
      }
    } else {
      std::fprintf(stderr, "usage: %s [--port N] [--threads N] [--key-file F]\n", argv[0]);
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
  if (!key.empty()) {
    namespace http = chatai::http;
    routes.add("GET", std::string(chatai::key_proof::path), [key](http::request& req, http::response res) {
      const std::string* challenge = req.headers.find(chatai::key_proof::challenge_header);
      if (!challenge || !chatai::key_proof::valid_challenge(*challenge)) {
        res.send_error(400, "bad challenge");
        return;
      }
      res.send(200, "text/plain", chatai::key_proof::answer(key, *challenge));
    });
  }
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
