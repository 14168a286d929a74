// The Asio adapter of the tunnel, driven by a real io_context consumer through the local
// transport, the real chatai-gate program and a real HTTP backend on loopback: the answer
// arrives whole and in order on the consumer's strand, back-pressure bounds what is held,
// cancellation closes the gate's side, and the first-byte timeout applies.
#include <doctest/doctest.h>

#include <unistd.h>

#include <atomic>
#include <deque>
#include <fstream>
#include <mutex>
#include <thread>

#include <asio.hpp>

#include "chatai/core/http_server.hpp"
#include "chatai/tunnel/asio_stream.hpp"
#include "chatai/tunnel/local_transport.hpp"
#include "gate_test_util.hpp"

using namespace chatai;
using namespace std::chrono_literals;

namespace {

constexpr std::size_t big_size = 1024 * 1024;

std::string big_body() {
  std::string body(big_size, '\0');
  for (std::size_t i = 0; i < body.size(); ++i) body[i] = static_cast<char>('a' + (i * 7 + i / 4096) % 26);
  return body;
}

// The body of an HTTP/1.1 response, decoded when it is chunked ("" when it is malformed).
std::string response_body(const std::string& response) {
  const auto head_end = response.find("\r\n\r\n");
  if (head_end == std::string::npos) return {};
  std::string_view rest = std::string_view(response).substr(head_end + 4);
  if (response.substr(0, head_end).find("Transfer-Encoding: chunked") == std::string::npos) return std::string(rest);
  std::string body;
  for (;;) {
    const auto line_end = rest.find("\r\n");
    if (line_end == std::string_view::npos) return {};
    const std::size_t size = std::stoul(std::string(rest.substr(0, line_end)), nullptr, 16);
    rest.remove_prefix(line_end + 2);
    if (size == 0) return body;
    if (rest.size() < size + 2) return {};
    body.append(rest.substr(0, size));
    rest.remove_prefix(size + 2);
  }
}

// The backend of job 101, with three answers, chosen by the request body: "big" (1 MiB at
// once), "slow" (a line every 10 ms until the client goes away) and "hang" (no answer until the
// test ends). It answers the job key proof first, as chatai serve does.
class backend {
 public:
  backend() {
    http::router routes;
    gate::testing::add_key_proof_route(routes, gate::testing::job_key("101"));
    routes.add("POST", "/v1/chat/completions", [this](http::request& req, http::response res) {
      if (req.body.find("big") != std::string::npos) {
        res.send(200, "application/octet-stream", big_body());
        return;
      }
      std::lock_guard lock(mutex_);
      if (req.body.find("hang") != std::string::npos) {
        held_.push_back(res);
        return;
      }
      streams_.emplace_back([this, res]() mutable {
        bool ok = res.begin_stream(200, "text/plain");
        while (ok) {
          std::this_thread::sleep_for(10ms);
          ok = res.write("line\n");
        }
        client_gone_ = true;
      });
    });
    auto started = http::server::start({}, std::move(routes));
    REQUIRE(started);
    server_ = std::move(*started);
  }
  ~backend() {
    server_->stop(0ms);
    for (auto& t : streams_) t.join();
  }
  std::uint16_t port() const { return server_->port(); }
  bool client_gone() const { return client_gone_; }

 private:
  std::unique_ptr<http::server> server_;
  std::mutex mutex_;
  std::vector<std::thread> streams_;
  std::vector<http::response> held_;
  std::atomic<bool> client_gone_{false};
};

// The real gate over a state directory whose one service "chat" is served by `b`.
struct gate_setup {
  gate::testing::gate_fixture fx;
  std::unique_ptr<tunnel::local_transport> transport;

  explicit gate_setup(const backend& b) {
    fx.add_backend("101", b.port());
    fx.publish();
    const auto config = fx.dir.path / "gate.json";
    std::ofstream(config) << R"({"state_dir":")" << fx.config.state_dir.string()
                          << R"(","backend":{"connect_timeout_ms":1000,"first_byte_timeout_ms":10000,)"
                          << R"("idle_timeout_ms":5000}})";
    tunnel::local_options o;
    o.gate_program = CHATAI_GATE_PROGRAM;
    o.gate_config = config.string();
    o.keep_alive_interval = 0ms;
    auto created = tunnel::local_transport::create(std::move(o));
    REQUIRE(created);
    transport = std::move(*created);
  }
};

tunnel::gate_request request_for(const std::string& what) {
  tunnel::gate_request r;
  r.id = "asio-" + what;
  r.service = "chat";
  r.body = R"({"model":"smol","messages":[{"role":"user","content":")" + what + R"("}]})";
  return r;
}

// A consumer that writes every piece to a socket with asio::async_write and reports it consumed
// once written, as the gateway writes an answer on to its HTTP client.
struct socket_consumer {
  asio::io_context io;
  asio::executor_work_guard<asio::io_context::executor_type> work{io.get_executor()};
  asio::local::stream_protocol::socket out{io}, in{io};
  std::shared_ptr<tunnel::asio_stream> stream;
  std::deque<std::string> queue;
  bool ended = false;
  std::optional<status> outcome;
  std::size_t delivered = 0, consumed = 0, max_held = 0;
  bool off_strand = false;
  std::thread::id io_thread;

  socket_consumer() { asio::local::connect_pair(out, in); }

  tunnel::asio_stream_callbacks callbacks() {
    return {[this](std::string bytes) {
              off_strand |= !stream->strand().running_in_this_thread() || std::this_thread::get_id() != io_thread;
              delivered += bytes.size();
              max_held = std::max(max_held, delivered - consumed);
              queue.push_back(std::move(bytes));
              if (queue.size() == 1) write_next();
            },
            [this](const status& st) {
              off_strand |= !stream->strand().running_in_this_thread() || std::this_thread::get_id() != io_thread;
              outcome = st;
              ended = true;
              if (queue.empty()) close();
            }};
  }

  void write_next() {
    asio::async_write(out, asio::buffer(queue.front()),
                      asio::bind_executor(stream->strand(), [this](std::error_code ec, std::size_t n) {
                        REQUIRE_FALSE(ec);
                        consumed += n;
                        stream->consumed(n);
                        queue.pop_front();
                        if (!queue.empty())
                          write_next();
                        else if (ended)
                          close();
                      }));
  }

  void close() {
    out.close();
    work.reset();
  }

  // Runs the io_context on this thread while `reader` drains the other end of the socket.
  std::string run(std::chrono::milliseconds per_16k_delay) {
    std::string received;
    std::thread reader([&] {
      char buf[16384];
      for (;;) {
        const auto n = ::read(in.native_handle(), buf, sizeof buf);
        if (n <= 0) break;
        received.append(buf, static_cast<std::size_t>(n));
        std::this_thread::sleep_for(per_16k_delay);
      }
    });
    io_thread = std::this_thread::get_id();
    io.run_for(30s);
    if (!ended) out.close();
    reader.join();
    return received;
  }
};

}  // namespace

TEST_CASE("a large answer arrives whole on the consumer's strand, held within the window") {
  backend b;
  gate_setup g(b);
  socket_consumer c;
  tunnel::request_options o;
  o.window = 32 * 1024;
  c.stream = tunnel::asio_stream::start(*g.transport, c.io.get_executor(), request_for("big"), c.callbacks(), o);
  const std::string received = c.run(2ms);

  REQUIRE(c.outcome.has_value());
  CHECK(c.outcome->ok());
  CHECK_FALSE(c.off_strand);
  CHECK(received.rfind("HTTP/1.1 200 ", 0) == 0);
  const bool body_intact = response_body(received) == big_body();
  CHECK(body_intact);
  CHECK(c.delivered == received.size());
  // The transport reads at most 64 KiB at a time, and only while the window is open: a slow
  // client never makes the gateway hold the whole answer.
  CHECK(c.max_held <= o.window + 64 * 1024);
  CHECK(c.max_held < big_size / 4);
}

TEST_CASE("cancelling closes the gate's side: the backend sees its client leave") {
  backend b;
  gate_setup g(b);
  socket_consumer c;
  auto callbacks = c.callbacks();
  auto on_data = std::move(callbacks.on_data);
  callbacks.on_data = [&c, on_data](std::string bytes) {
    on_data(std::move(bytes));
    c.stream->cancel();
  };
  c.stream = tunnel::asio_stream::start(*g.transport, c.io.get_executor(), request_for("slow"), std::move(callbacks));
  const std::string received = c.run(0ms);

  REQUIRE(c.outcome.has_value());
  REQUIRE_FALSE(c.outcome->ok());
  CHECK(c.outcome->err().code() == errc::cancelled);
  CHECK(received.rfind("HTTP/1.1 200 ", 0) == 0);
  const auto cancelled = std::chrono::steady_clock::now();
  while (!b.client_gone() && std::chrono::steady_clock::now() - cancelled < 5s) std::this_thread::sleep_for(10ms);
  CHECK(b.client_gone());
}

TEST_CASE("the first-byte timeout and the caller's cancellation token end a request on the strand") {
  backend b;
  gate_setup g(b);
  {
    socket_consumer c;
    tunnel::request_options o;
    o.first_byte_timeout = 300ms;
    const auto started = std::chrono::steady_clock::now();
    c.stream = tunnel::asio_stream::start(*g.transport, c.io.get_executor(), request_for("hang"), c.callbacks(), o);
    CHECK(c.run(0ms).empty());
    REQUIRE(c.outcome.has_value());
    REQUIRE_FALSE(c.outcome->ok());
    CHECK(c.outcome->err().code() == errc::timeout);
    CHECK(std::chrono::steady_clock::now() - started < 5s);
    CHECK_FALSE(c.off_strand);
  }
  {
    socket_consumer c;
    cancellation_source client_left;
    tunnel::request_options o;
    o.cancel = client_left.token();
    c.stream = tunnel::asio_stream::start(*g.transport, c.io.get_executor(), request_for("hang"), c.callbacks(), o);
    asio::steady_timer timer(c.io, 100ms);
    timer.async_wait([&](std::error_code) { client_left.cancel(); });
    CHECK(c.run(0ms).empty());
    REQUIRE(c.outcome.has_value());
    REQUIRE_FALSE(c.outcome->ok());
    CHECK(c.outcome->err().code() == errc::cancelled);
  }
}
