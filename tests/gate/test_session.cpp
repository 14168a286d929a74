// Tests of the `session` command (gate protocol version 2) over socket pairs, with real HTTP
// backends on loopback: many requests at once, windows, cancel, limits, goaway, hostile frames.
#include <doctest/doctest.h>
#include <poll.h>
#include <sys/socket.h>

#include <map>

#include "chatai/proto/frames.hpp"
#include "fake_backend.hpp"
#include "gate_test_util.hpp"

using namespace chatai;
using namespace chatai::gate;
using namespace chatai::gate::testing;
using namespace std::chrono_literals;

namespace {

// The client side of a session: the gate's run() on a thread, frames both ways.
class session_client {
 public:
  explicit session_client(const gate_config& config) {
    int in[2], out[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, in) == 0);
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, out) == 0);
    to_gate_.reset(in[1]);
    from_gate_.reset(out[0]);
    gate_ = std::thread([&config, this, gin = in[0], gout = out[1]] {
      exit_code_ = run(config, verb::session, gin, gout);
      ::close(gin);
      ::close(gout);
    });
  }
  ~session_client() {
    to_gate_.reset();
    if (gate_.joinable()) gate_.join();
  }

  void send(std::string_view bytes) {
    while (!bytes.empty()) {
      const ssize_t n = ::send(to_gate_.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n <= 0) return;
      bytes.remove_prefix(static_cast<std::size_t>(n));
    }
  }
  void send_frame(proto::frame_kind kind, std::uint32_t id, std::string_view payload = {}) {
    std::string out;
    proto::append_frame(out, kind, id, payload);
    send(out);
  }
  void open(std::uint32_t id, const std::string& request) {
    std::string out;
    proto::append_frame(out, proto::frame_kind::open, id, std::string_view(request).substr(0, 10));
    proto::append_frames(out, proto::frame_kind::data, id, std::string_view(request).substr(10));
    send(out);
  }
  void window(std::uint32_t id, std::uint32_t credit) {
    std::string out;
    proto::append_window(out, id, credit);
    send(out);
  }
  void close_input() { ::shutdown(to_gate_.get(), SHUT_WR); }

  // Reads frames until `done` says stop, end-of-file or `timeout`. Returns false on a timeout.
  bool read_until(const std::function<bool()>& done, std::chrono::milliseconds timeout = 10s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    char buf[65536];
    while (!done()) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return false;
      pollfd p{from_gate_.get(), POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      const ssize_t n = ::read(from_gate_.get(), buf, sizeof buf);
      if (n <= 0) {
        eof = true;
        return done();
      }
      auto st = reader_.feed(std::string_view(buf, static_cast<std::size_t>(n)), [&](const proto::frame_view& f) {
        ++frames;
        switch (f.kind) {
          case proto::frame_kind::hello: hello = std::string(f.payload); break;
          case proto::frame_kind::goaway: goaway = true; break;
          case proto::frame_kind::data: responses[f.id] += f.payload; break;
          case proto::frame_kind::end: ends[f.id] = proto::end_status(f); break;
          default: FAIL("a frame the gate must not send");
        }
        return status{};
      });
      REQUIRE(st);
    }
    return true;
  }
  bool ended(std::uint32_t id) const { return ends.count(id) > 0; }
  int join() {
    if (gate_.joinable()) gate_.join();
    return exit_code_;
  }

  std::string hello;
  bool goaway = false;
  bool eof = false;
  int frames = 0;
  std::map<std::uint32_t, std::string> responses;
  std::map<std::uint32_t, int> ends;

 private:
  unique_fd to_gate_, from_gate_;
  proto::frame_reader reader_;
  std::thread gate_;
  int exit_code_ = -1;
};

const std::string stream_body = R"({"model":"smol","stream":true,"messages":[]})";
const std::string plain_body = R"({"model":"smol","messages":[]})";

}  // namespace

TEST_CASE("a session says hello, then runs many requests at once, each answered as by the request command") {
  gate_fixture fx;
  fake_backend backend("101", 0, 5, 20ms);
  fx.add_backend("101", backend.port());
  fx.publish();
  const auto v1 = run_verb(fx.config, verb::request, chat_request(stream_body));
  REQUIRE(status_of(v1.out) == 200);

  session_client client(fx.config);
  REQUIRE(client.read_until([&] { return !client.hello.empty(); }));
  auto hello = proto::parse_hello(client.hello);
  REQUIRE(hello);
  CHECK(hello->max_requests == 256);
  CHECK(hello->window == 256 * 1024);
  constexpr std::uint32_t n = 24;
  for (std::uint32_t id = 1; id <= n; ++id) client.open(id, chat_request(id % 2 ? stream_body : plain_body));
  REQUIRE(client.read_until([&] { return client.ends.size() == n; }));
  for (std::uint32_t id = 1; id <= n; ++id) {
    CAPTURE(id);
    CHECK(client.ends[id] == exit_ok);
    const std::string& out = client.responses[id];
    CHECK(status_of(out) == 200);
    CHECK(out.substr(out.size() - 5) == "0\r\n\r\n");
    if (id % 2) CHECK(out == v1.out);
    else CHECK(out.find("\"content\":\"hello\"") != std::string::npos);
  }
  CHECK(usage_lines(fx).size() == n + 1);
  // No request is in flight; the session keeps its marker files, idle, for the next ones.
  const auto kept = listing(fx.state().inflight_dir());
  CHECK(kept.size() <= n);
  for (const auto& name : kept) CHECK(name.front() == '+');
  CHECK(slurm::count_inflight(fx.state())->by_service.empty());
  // The client leaving ends the session, and its files go with it.
  client.close_input();
  CHECK(client.join() == exit_ok);
  CHECK(listing(fx.state().inflight_dir()).empty());
}

TEST_CASE("a session proves a backend once and sends it its following requests on the same connection") {
  gate_fixture fx;
  fake_backend backend("101", 0, 2, 1ms);
  fx.add_backend("101", backend.port());
  fx.publish();
  session_client client(fx.config);
  REQUIRE(client.read_until([&] { return !client.hello.empty(); }));
  constexpr std::uint32_t n = 6;
  for (std::uint32_t id = 1; id <= n; ++id) {
    client.open(id, chat_request(id % 2 ? stream_body : plain_body));
    REQUIRE(client.read_until([&] { return client.ended(id); }));
    CHECK(status_of(client.responses[id]) == 200);
  }
  CHECK(backend.calls() == static_cast<int>(n));
  CHECK(backend.proofs() == 1);
  // A backend that went away is not reached through its old connection: the next request
  // finds its connection closed and fails over as before.
  backend.stop();
  client.open(n + 1, chat_request(plain_body));
  REQUIRE(client.read_until([&] { return client.ended(n + 1); }));
  CHECK(status_of(client.responses[n + 1]) == 502);
  client.close_input();
  CHECK(client.join() == exit_ok);
}

TEST_CASE("a session checks each request as the request command does") {
  gate_fixture fx;
  fake_backend backend;
  fx.add_backend("101", backend.port());
  fx.publish();
  session_client client(fx.config);
  client.open(1, header_line("chat", "/etc/passwd", 2) + "{}");
  client.open(2, chat_request(R"({"model":"other"})"));
  client.open(3, chat_request(plain_body) + "extra");
  client.open(4, header_line("chat", "/v1/chat/completions", 100000000) + "{}");
  client.open(5, chat_request(plain_body));
  REQUIRE(client.read_until([&] { return client.ends.size() == 5; }));
  for (std::uint32_t id = 1; id <= 4; ++id) {
    CAPTURE(id);
    const auto v1 = run_verb(fx.config, verb::request, id == 1   ? header_line("chat", "/etc/passwd", 2) + "{}"
                                                       : id == 2 ? chat_request(R"({"model":"other"})")
                                                       : id == 3 ? chat_request(plain_body) + "extra"
                                                                 : header_line("chat", "/v1/chat/completions", 100000000) + "{}");
    CHECK(status_of(client.responses[id]) == status_of(v1.out));
    CHECK(status_of(client.responses[id]) >= 400);
    CHECK(client.responses[id] == v1.out);
  }
  CHECK(status_of(client.responses[5]) == 200);
  CHECK(backend.calls() == 1);
}

TEST_CASE("a response never runs ahead of its window, and a slow reader holds up no other request") {
  gate_fixture fx;
  fx.config.session.window_bytes = 4096;
  fake_backend backend("101", 0, 200, 0ms);
  fx.add_backend("101", backend.port());
  fx.publish();
  session_client client(fx.config);
  client.open(1, chat_request(stream_body));  // never granted more
  client.open(2, chat_request(stream_body));
  std::uint32_t granted = 4096;
  REQUIRE(client.read_until([&] {
    CHECK(client.responses[1].size() <= 4096);
    if (client.responses[2].size() + 1024 > granted && !client.ended(2)) {
      client.window(2, 4096);
      granted += 4096;
    }
    return client.ended(2);
  }));
  CHECK(client.ends[2] == exit_ok);
  CHECK(client.responses[2].find("data: [DONE]") != std::string::npos);
  CHECK(client.responses[1].size() == 4096);
  CHECK_FALSE(client.ended(1));
  client.window(1, 1 << 20);
  REQUIRE(client.read_until([&] { return client.ended(1); }));
  CHECK(client.responses[1] == client.responses[2]);
}

TEST_CASE("cancel ends one request as its client leaving does, and the others go on") {
  gate_fixture fx;
  fake_backend backend("101", 0, 40, 50ms);
  fx.add_backend("101", backend.port());
  fx.publish();
  session_client client(fx.config);
  client.open(1, chat_request(stream_body));
  client.open(2, chat_request(stream_body));
  REQUIRE(client.read_until([&] { return client.responses[1].find("tok") != std::string::npos; }));
  client.send_frame(proto::frame_kind::cancel, 1);
  REQUIRE(client.read_until([&] { return client.ended(1); }));
  CHECK(client.ends[1] == exit_incomplete);
  CHECK_FALSE(client.ended(2));
  // Frames for a request that has ended are late, not wrong.
  client.window(1, 100);
  client.send_frame(proto::frame_kind::cancel, 1);
  REQUIRE(client.read_until([&] { return client.ended(2); }, 20s));
  CHECK(client.ends[2] == exit_ok);
  CHECK(client.responses[2].find("data: [DONE]") != std::string::npos);
  CHECK(client.responses[1].find("data: [DONE]") == std::string::npos);
  for (int i = 0; i < 100 && !backend.client_gone(); ++i) std::this_thread::sleep_for(20ms);
  CHECK(backend.client_gone());
}

TEST_CASE("beyond max_requests at once a request gets 503; after max_session_requests the session says goaway") {
  gate_fixture fx;
  fx.config.session.max_requests = 2;
  fx.config.session.max_session_requests = 3;
  fake_backend backend("101", 0, 10, 30ms);
  fx.add_backend("101", backend.port());
  fx.publish();
  session_client client(fx.config);
  client.open(1, chat_request(stream_body));
  client.open(2, chat_request(stream_body));
  client.open(3, chat_request(plain_body));
  REQUIRE(client.read_until([&] { return client.ended(3); }));
  CHECK(status_of(client.responses[3]) == 503);
  CHECK(client.responses[3].find("session_full") != std::string::npos);
  CHECK(client.responses[3].find("Retry-After:") != std::string::npos);
  REQUIRE(client.read_until([&] { return client.ended(1) && client.ended(2); }));
  client.open(4, chat_request(plain_body));
  REQUIRE(client.read_until([&] { return client.ended(4); }));
  CHECK(status_of(client.responses[4]) == 200);
  CHECK(client.goaway);  // the third request the session ran
  // One opened before the client read the goaway still runs; then the client closes.
  client.open(5, chat_request(plain_body));
  REQUIRE(client.read_until([&] { return client.ended(5); }));
  CHECK(status_of(client.responses[5]) == 200);
  client.close_input();
  REQUIRE(client.read_until([&] { return client.eof; }));
  CHECK(client.join() == exit_ok);
}

TEST_CASE("an idle session says goaway and ends when the client closes it") {
  gate_fixture fx;
  fx.config.session.idle_timeout = 1s;
  fx.publish();
  session_client client(fx.config);
  REQUIRE(client.read_until([&] { return client.goaway; }, 5s));
  client.close_input();
  REQUIRE(client.read_until([&] { return client.eof; }));
  CHECK(client.join() == exit_ok);
}

TEST_CASE("a frame the protocol does not allow ends the session with exit_usage") {
  gate_fixture fx;
  fake_backend backend("101", 0, 100, 50ms);
  fx.add_backend("101", backend.port());
  fx.publish();
  const std::vector<std::pair<const char*, std::function<void(session_client&)>>> cases = {
      {"an unknown kind", [](session_client& c) { c.send(std::string("\x09\0\0\0\1\0\0\0\0", 9)); }},
      {"an id used again", [](session_client& c) { c.open(1, chat_request(plain_body)); }},
      {"a frame for a request never opened", [](session_client& c) { c.window(9, 10); }},
      {"a frame only the gate sends", [](session_client& c) { c.send_frame(proto::frame_kind::end, 1, std::string(1, '\0')); }},
      {"a payload above the limit", [](session_client& c) { c.send(std::string("\x03\0\0\0\1\x01\0\0\0", 9)); }},
  };
  for (const auto& [what, misbehave] : cases) {
    CAPTURE(what);
    session_client client(fx.config);
    client.open(1, chat_request(stream_body));
    REQUIRE(client.read_until([&] { return client.responses[1].find("tok") != std::string::npos; }));
    misbehave(client);
    REQUIRE(client.read_until([&] { return client.eof; }));
    CHECK(client.join() == exit_usage);
  }
}
