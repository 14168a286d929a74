// `chatai proxy`: the front of an OpenAI-compatible server other than chatai serve (vLLM, say)
// inside a Slurm job. It holds the job key, answers the gate's job key proof
// (chatai/core/key_proof.hpp), requires the key as chatai serve does (every route but /health),
// and forwards each request to the upstream server on the node with the key as its bearer
// token, streaming the answer back. Once the upstream answers its ready route, it writes the
// endpoint file. SIGTERM, SIGINT and SIGUSR1 drain it as they drain chatai serve: new requests
// get 503, the ones in flight finish, then it exits; a second SIGTERM or SIGINT ends it at once.
#include <signal.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <memory>
#include <mutex>
#include <thread>

#include "chatai/core/crypto.hpp"
#include "chatai/core/http_client.hpp"
#include "chatai/core/http_server.hpp"
#include "chatai/core/json.hpp"
#include "chatai/core/key_proof.hpp"
#include "chatai/core/log.hpp"
#include "chatai/serve/server.hpp"
#include "commands.hpp"
#include "job_support.hpp"

namespace chatai::cli {

namespace {

using namespace std::chrono_literals;

constexpr int retry_after_seconds = 5;

// The upstream's address from "http://HOST:PORT" (HOST a name, an IPv4 literal or [IPv6]).
result<std::pair<std::string, std::uint16_t>> parse_upstream(std::string_view url) {
  const auto bad = [&](std::string_view why) {
    return error(errc::invalid_argument, "--upstream \"" + std::string(url) + "\": " + std::string(why));
  };
  constexpr std::string_view scheme = "http://";
  if (!url.starts_with(scheme)) return bad("must start with http://");
  std::string_view rest = url.substr(scheme.size());
  if (rest.ends_with('/')) rest.remove_suffix(1);
  const auto colon = rest.rfind(':');
  if (colon == std::string_view::npos || colon == 0 || rest.find('/') != std::string_view::npos)
    return bad("expected http://HOST:PORT");
  std::string host(rest.substr(0, colon));
  if (host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  const std::string_view digits = rest.substr(colon + 1);
  if (digits.empty() || digits.size() > 5 || digits.find_first_not_of("0123456789") != std::string_view::npos)
    return bad("the port must be a number");
  const int port = std::stoi(std::string(digits));
  if (port < 1 || port > 65535) return bad("the port must be 1 to 65535");
  auto address = http::resolve_address(host);
  if (!address) return bad("the host does not resolve");
  return std::pair{std::move(*address), static_cast<std::uint16_t>(port)};
}

// Fields that describe one hop (RFC 9110, 7.6.1) or that the next hop sets itself.
bool hop_field(std::string_view name) {
  for (const std::string_view hop : {"Connection", "Keep-Alive", "Proxy-Connection", "TE", "Trailer", "Transfer-Encoding",
                                     "Upgrade", "Host", "Content-Length", "Authorization", "Date", "Server"})
    if (http::iequals(name, hop)) return true;
  return false;
}

std::string error_body(std::string_view message, std::string_view type, std::string_view code) {
  std::string body = "{\"error\":{\"message\":";
  json::append_quoted(body, message);
  body += ",\"type\":";
  json::append_quoted(body, type);
  body += ",\"param\":null,\"code\":";
  json::append_quoted(body, code);
  body += "}}";
  return body;
}

struct proxy_options {
  std::string upstream;
  std::string api_key_file;
  std::string endpoint_file;
  std::string host = "127.0.0.1";
  int port = 0;
  std::string ready_path = "/v1/models";
  int start_timeout_s = 3600;
  int request_timeout_s = 600;
};

// The forwarding server. Each forwarded request runs on a thread of its own, since the
// upstream client blocks; the I/O thread only parses and answers the proof.
// Thread safety: handlers run on the server's I/O threads and the forwarding threads; drain()
// and the waits may be called from any thread.
class job_proxy {
 public:
  job_proxy(std::string key, std::string upstream_host, std::uint16_t upstream_port, std::chrono::seconds timeout)
      : key_(std::move(key)), upstream_host_(std::move(upstream_host)), upstream_port_(upstream_port) {
    upstream_options_.connect_timeout = 5s;
    upstream_options_.first_byte_timeout = timeout;
    upstream_options_.idle_timeout = timeout;
  }

  http::router routes() {
    http::router r;
    r.add("GET", std::string(key_proof::path), [this](http::request& req, http::response res) { prove(req, res); });
    for (const char* method : {"GET", "POST"})
      r.add_prefix(method, "/", [this](http::request& req, http::response res) { accept(req, std::move(res)); });
    return r;
  }

  // Asks the upstream for `path` with the key until it answers 200, or until the deadline or a
  // drain. Logs the first failure and then one line a minute.
  bool wait_for_upstream(const std::string& path, std::chrono::seconds limit) {
    const auto start = std::chrono::steady_clock::now();
    auto next_log = start;
    for (;;) {
      http::client_request req = upstream_request("GET", path);
      http::client_options quick;
      quick.connect_timeout = 2s;
      quick.first_byte_timeout = 10s;
      quick.idle_timeout = 10s;
      auto r = http::fetch(req, quick);
      if (r && r->status == 200) return true;
      const auto now = std::chrono::steady_clock::now();
      if (now >= next_log) {
        log::info("proxy: waiting for the upstream server",
                  {{"path", path}, {"answer", r ? "HTTP " + std::to_string(r->status) : r.err().message()}});
        next_log = now + 60s;
      }
      if (limit.count() > 0 && now - start >= limit) return false;
      std::unique_lock lock(mutex_);
      if (changed_.wait_for(lock, 1s, [&] { return draining_; })) return false;
    }
  }

  void drain() {
    std::lock_guard lock(mutex_);
    if (draining_) return;
    draining_ = true;
    log::info("proxy: draining", {{"in_flight", std::to_string(in_flight_)}});
    changed_.notify_all();
  }

  // Returns once drain() was called and no forwarded request is left.
  void wait_drained() {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return draining_ && in_flight_ == 0; });
  }

 private:
  void prove(const http::request& req, http::response& res) {
    const auto* challenge = req.headers.find(key_proof::challenge_header);
    if (!challenge || !key_proof::valid_challenge(*challenge)) {
      res.send(400, "application/json",
               error_body("The " + std::string(key_proof::challenge_header) + " header must be " +
                              std::to_string(2 * key_proof::challenge_bytes) + " lowercase hex digits.",
                          "invalid_request_error", "invalid_challenge"));
      return;
    }
    res.send(200, "text/plain", key_proof::answer(key_, *challenge));
  }

  bool authorized(const http::request& req) const {
    const auto* value = req.headers.find("Authorization");
    constexpr std::string_view scheme = "Bearer ";
    return value && value->size() > scheme.size() && http::iequals(std::string_view(*value).substr(0, scheme.size()), scheme) &&
           crypto::equal_constant_time(std::string_view(*value).substr(scheme.size()), key_);
  }

  void accept(http::request& req, http::response res) {
    if (req.path != "/health" && !authorized(req)) {
      const bool given = req.headers.find("Authorization") != nullptr;
      res.send(401, "application/json",
               error_body(given ? "Incorrect API key provided." : "Missing bearer authentication in the Authorization header.",
                          "invalid_request_error", "invalid_api_key"));
      return;
    }
    {
      std::lock_guard lock(mutex_);
      if (draining_) {
        http::headers extra;
        extra.add("Retry-After", std::to_string(retry_after_seconds));
        res.send(503, "application/json", error_body("The server is draining.", "server_error", "draining"), extra);
        return;
      }
      ++in_flight_;
    }
    auto job = std::make_shared<std::pair<http::request, http::response>>(std::move(req), std::move(res));
    std::thread([this, job]() mutable {
      {
        auto mine = std::move(job);
        forward(mine->first, mine->second);
      }
      std::lock_guard lock(mutex_);
      --in_flight_;
      changed_.notify_all();
    }).detach();
  }

  http::client_request upstream_request(std::string method, std::string target) const {
    http::client_request up;
    up.method = std::move(method);
    up.host = upstream_host_;
    up.port = upstream_port_;
    up.target = std::move(target);
    up.headers.add("Authorization", "Bearer " + key_);
    return up;
  }

  // Streams the upstream's answer to `res` as it arrives. A failure before the first byte is a
  // 502; a failure after it cuts the stream short, so that the client sees an incomplete body.
  void forward(http::request& req, http::response& res) const {
    http::client_request up = upstream_request(req.method, req.target);
    for (const auto& field : req.headers)
      if (!hop_field(field.name)) up.headers.add(field.name, field.value);
    up.body = std::move(req.body);
    bool started = false;
    http::response_handlers handlers;
    handlers.on_head = [&](const http::response_head& head) {
      std::string type = "application/octet-stream";
      http::headers extra;
      for (const auto& field : head.headers) {
        if (http::iequals(field.name, "Content-Type")) type = field.value;
        else if (!hop_field(field.name)) extra.add(field.name, field.value);
      }
      started = true;
      return res.begin_stream(head.status, type, extra);
    };
    handlers.on_body = [&](std::string_view piece) {
      if (!res.write(piece)) return false;
      return res.buffered_bytes() < 1024 * 1024 || res.wait_writable(upstream_options_.idle_timeout);
    };
    auto done = http::fetch_streaming(up, handlers, upstream_options_);
    if (done) {
      res.finish();
      return;
    }
    if (res.cancelled().is_cancelled()) return;  // the client went away; closing the upstream stops its work
    log::warn("proxy: the upstream request failed", {{"path", req.path}, {"error", done.err().message()}});
    if (!started)
      res.send(502, "application/json",
               error_body("The upstream server failed: " + done.err().message(), "server_error", "upstream_failed"));
  }

  const std::string key_;
  const std::string upstream_host_;
  const std::uint16_t upstream_port_;
  http::client_options upstream_options_;
  std::mutex mutex_;
  std::condition_variable changed_;  // drain and in-flight changes
  bool draining_ = false;
  std::int64_t in_flight_ = 0;
};

int run_proxy(const proxy_options& o) {
  auto upstream = parse_upstream(o.upstream);
  if (!upstream) {
    std::fprintf(stderr, "chatai: %s\n", upstream.err().message().c_str());
    return 2;
  }
  auto key = serve::read_api_key_file(o.api_key_file);
  if (!key) {
    std::fprintf(stderr, "chatai: %s\n", key.err().message().c_str());
    return 1;
  }
  job_proxy proxy(std::move(*key), upstream->first, upstream->second, std::chrono::seconds(o.request_timeout_s));

  // Blocked before any thread starts, so only the watcher takes them.
  const sigset_t set = shutdown_signals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::atomic<bool> done{false};
  std::thread watcher([&] { watch_shutdown_signals([&] { proxy.drain(); }, done, "proxy"); });
  const auto finish = [&](int code) {
    done.store(true);
    watcher.join();
    return code;
  };

  http::server_options server_options;
  server_options.host = o.host;
  server_options.port = static_cast<std::uint16_t>(o.port);
  server_options.io_threads = 2;
  server_options.limits.max_body_bytes = 64 * 1024 * 1024;
  auto server = http::server::start(server_options, proxy.routes());
  if (!server) {
    std::fprintf(stderr, "chatai: %s\n", server.err().message().c_str());
    return finish(1);
  }
  const std::uint16_t port = (*server)->port();
  log::info("proxy: listening", {{"host", o.host}, {"port", std::to_string(port)}, {"upstream", o.upstream}});
  if (!proxy.wait_for_upstream(o.ready_path, std::chrono::seconds(o.start_timeout_s))) {
    std::fprintf(stderr, "chatai: the upstream server did not answer %s with 200 in time, or a signal came first\n",
                 o.ready_path.c_str());
    (*server)->stop(0ms);
    return finish(1);
  }
  std::string line = "{\"event\":\"listening\",\"host\":";
  json::append_quoted(line, o.host);
  line += ",\"port\":" + std::to_string(port) + "}\n";
  std::fputs(line.c_str(), stdout);
  std::fflush(stdout);
  if (!o.endpoint_file.empty()) {
    if (auto written = write_endpoint_file(o.endpoint_file, o.host, port); !written) {
      std::fprintf(stderr, "chatai: --endpoint-file: %s\n", written.err().message().c_str());
      (*server)->stop(0ms);
      return finish(1);
    }
  }
  proxy.wait_drained();
  log::info("proxy: drained, exiting");
  (*server)->stop(5s);
  return finish(0);
}

}  // namespace

void add_proxy_command(CLI::App& app, int& exit_code) {
  auto opts = std::make_shared<proxy_options>();
  auto* cmd = app.add_subcommand("proxy", "the job key front of another OpenAI-compatible server (vLLM) in a job");
  cmd->add_option("--upstream", opts->upstream, "the server to forward to: http://HOST:PORT")->required();
  cmd->add_option("--api-key-file", opts->api_key_file,
                  "file holding the job key (mode 600): required from clients, proved to the gate, sent upstream")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--endpoint-file", opts->endpoint_file,
                  "once the upstream is ready, write {\"host\":...,\"port\":...} here (the scheduler's endpoint file)");
  cmd->add_option("--host", opts->host, "address to listen on")->capture_default_str();
  cmd->add_option("--port", opts->port, "port to listen on (0: any free port)")->check(CLI::Range(0, 65535))->capture_default_str();
  cmd->add_option("--ready-path", opts->ready_path, "the upstream route that answers 200 once it serves")
      ->capture_default_str();
  cmd->add_option("--start-timeout", opts->start_timeout_s, "seconds to wait for the upstream (0: no limit)")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  cmd->add_option("--request-timeout", opts->request_timeout_s,
                  "seconds the upstream may take to its first byte, and between two reads")
      ->check(CLI::PositiveNumber)->capture_default_str();
  cmd->callback([opts, &exit_code] {
    if (opts->ready_path.empty() || opts->ready_path.front() != '/') {
      std::fprintf(stderr, "chatai: --ready-path must start with '/'\n");
      exit_code = 2;
      return;
    }
    exit_code = run_proxy(*opts);
  });
}

}  // namespace chatai::cli
