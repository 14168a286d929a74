// Tests of the HTTP server and client on loopback: routing, keep-alive, pipelining, error
// responses, streaming, SSE, cancellation, shutdown, client deadlines and client connections
// that carry several requests.
#include <doctest/doctest.h>

#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <future>
#include <mutex>
#include <thread>
#include <utility>

#include <asio.hpp>

#include "chatai/core/http_client.hpp"
#include "chatai/core/http_server.hpp"

using namespace chatai;
using namespace chatai::http;
using namespace std::chrono_literals;

namespace {

// Generous limits that only stop a broken test from hanging.
constexpr auto guard = 20s;

// A blocking loopback socket for writing raw bytes at the server.
class raw_client {
 public:
  explicit raw_client(std::uint16_t port) : socket_(io_) {
    socket_.connect({asio::ip::make_address("127.0.0.1"), port});
    const timeval tv{static_cast<time_t>(guard.count()), 0};
    setsockopt(socket_.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }

  void send(std::string_view bytes) { asio::write(socket_, asio::buffer(bytes)); }

  // Reads one response; bytes after it stay buffered for the next call.
  client_response read_response(bool head = false) {
    response_parser parser(head);
    client_response out;
    const auto sink = [&](std::string_view bytes) {
      out.body.append(bytes);
      return true;
    };
    parse_state st = parse_state::need_more;
    const std::string earlier = std::exchange(pending_, {});
    feed_until_complete(parser, earlier, sink, st);
    char buffer[4096];
    while (st == parse_state::need_more) {
      std::error_code ec;
      const auto n = socket_.read_some(asio::buffer(buffer), ec);
      if (ec) {
        st = parser.finish_at_eof();
        break;
      }
      feed_until_complete(parser, std::string_view(buffer, n), sink, st);
    }
    REQUIRE(st == parse_state::complete);
    out.status = parser.head().status;
    out.headers = parser.head().headers;
    return out;
  }

  // True when the server closes the connection (EOF) before the guard passes.
  bool closed_by_server() {
    char byte;
    std::error_code ec;
    socket_.read_some(asio::buffer(&byte, 1), ec);
    return ec == asio::error::eof || ec == asio::error::connection_reset;
  }

  void close() { socket_.close(); }

 private:
  // Feeds bytes; whatever follows the end of the response is kept for the next one.
  template <class Sink>
  void feed_until_complete(response_parser& parser, std::string_view bytes, const Sink& sink, parse_state& st) {
    for (std::size_t i = 0; i < bytes.size(); ++i) {
      st = parser.feed(bytes.substr(i, 1), sink);
      if (st != parse_state::need_more) {
        pending_.assign(bytes.substr(i + 1));
        return;
      }
    }
  }

  asio::io_context io_;
  asio::ip::tcp::socket socket_;
  std::string pending_;
};

client_request get(std::uint16_t port, std::string target) {
  client_request req;
  req.host = "127.0.0.1";
  req.port = port;
  req.target = std::move(target);
  return req;
}

// Waits on a condition with the guard as a failure limit.
class progress {
 public:
  void notify() {
    {
      std::lock_guard lock(mutex_);
      ++count_;
    }
    cv_.notify_all();
  }
  bool wait_for_count(int n) {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, guard, [&] { return count_ >= n; });
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  int count_ = 0;
};

router basic_routes() {
  router r;
  r.add("GET", "/hello", [](request&, response res) { res.send(200, "text/plain", "hello"); });
  r.add("POST", "/echo", [](request& req, response res) {
    headers extra;
    const auto* tag = req.headers.find("x-tag");
    extra.add("X-Tag", tag ? *tag : "none");
    res.send(200, "application/octet-stream", req.body, extra);
  });
  r.add("DELETE", "/echo", [](request&, response res) { res.send(204, "", ""); });
  r.add_prefix("GET", "/files/", [](request& req, response res) { res.send(200, "text/plain", req.path.substr(7)); });
  r.add("GET", "/throws", [](request&, response) -> void { throw std::runtime_error("boom"); });
  r.add("GET", "/ignores", [](request&, response) {});
  r.add("GET", "/peer", [](request& req, response res) { res.send(200, "text/plain", req.remote_address); });
  return r;
}

std::unique_ptr<server> start_server(router r, server_options options = {}) {
  auto s = server::start(std::move(options), std::move(r));
  REQUIRE(s.ok());
  return std::move(s).value();
}

}  // namespace

TEST_CASE("the client talks to the server: bodies, headers, routes") {
  auto srv = start_server(basic_routes());
  REQUIRE(srv->port() != 0);

  auto hello = fetch(get(srv->port(), "/hello"));
  REQUIRE(hello.ok());
  CHECK(hello->status == 200);
  CHECK(hello->body == "hello");
  CHECK(*hello->headers.find("content-type") == "text/plain");

  auto post = get(srv->port(), "/echo");
  post.method = "POST";
  post.body = std::string(100000, 'z');
  post.headers.add("X-Tag", "abc");
  auto echo = fetch(post);
  REQUIRE(echo.ok());
  CHECK(echo->body == post.body);
  CHECK(*echo->headers.find("x-tag") == "abc");

  auto file = fetch(get(srv->port(), "/files/a/b.txt"));
  REQUIRE(file.ok());
  CHECK(file->body == "a/b.txt");

  auto missing = fetch(get(srv->port(), "/nope"));
  REQUIRE(missing.ok());
  CHECK(missing->status == 404);
  CHECK(missing->body.find("\"type\":\"invalid_request_error\"") != std::string::npos);

  auto put = get(srv->port(), "/echo");
  put.method = "PUT";
  auto wrong = fetch(put);
  REQUIRE(wrong.ok());
  CHECK(wrong->status == 405);
  CHECK(*wrong->headers.find("allow") == "POST, DELETE");

  auto thrown = fetch(get(srv->port(), "/throws"));
  REQUIRE(thrown.ok());
  CHECK(thrown->status == 500);
  auto ignored = fetch(get(srv->port(), "/ignores"));
  REQUIRE(ignored.ok());
  CHECK(ignored->status == 500);

  auto peer = fetch(get(srv->port(), "/peer"));
  REQUIRE(peer.ok());
  CHECK(peer->body == "127.0.0.1");  // the handler sees who connected
}

TEST_CASE("keep-alive and pipelining on one socket, answered in order") {
  auto srv = start_server(basic_routes());
  raw_client c(srv->port());
  c.send("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK(c.read_response().body == "hello");
  c.send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\none");
  CHECK(c.read_response().body == "one");

  c.send(
      "POST /echo HTTP/1.1\r\nContent-Length: 1\r\n\r\nA"
      "GET /files/B HTTP/1.1\r\n\r\n"
      "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nC\r\n0\r\n\r\n"
      "GET /hello HTTP/1.1\r\nConnection: close\r\n\r\n");
  CHECK(c.read_response().body == "A");
  CHECK(c.read_response().body == "B");
  CHECK(c.read_response().body == "C");
  const auto last = c.read_response();
  CHECK(last.body == "hello");
  CHECK(*last.headers.find("connection") == "close");
  CHECK(c.closed_by_server());
}

TEST_CASE("HTTP/1.0 clients get keep-alive only when they ask") {
  auto srv = start_server(basic_routes());
  raw_client a(srv->port());
  a.send("GET /hello HTTP/1.0\r\n\r\n");
  CHECK(a.read_response().body == "hello");
  CHECK(a.closed_by_server());

  raw_client b(srv->port());
  b.send("GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
  CHECK(*b.read_response().headers.find("connection") == "keep-alive");
  b.send("GET /hello HTTP/1.0\r\n\r\n");
  CHECK(b.read_response().body == "hello");
}

TEST_CASE("oversized and malformed requests get a JSON error and a closed connection") {
  server_options options;
  options.limits.max_header_bytes = 1024;
  options.limits.max_body_bytes = 1000;
  auto srv = start_server(basic_routes(), options);

  const auto expect_error = [&](std::string_view bytes, int status) {
    raw_client c(srv->port());
    c.send(bytes);
    const auto res = c.read_response();
    CHECK(res.status == status);
    CHECK(res.body.find("{\"error\":{\"message\":") == 0);
    CHECK(res.body.find("\"type\":\"invalid_request_error\",\"param\":null,\"code\":null}}") != std::string::npos);
    CHECK(*res.headers.find("connection") == "close");
    CHECK(c.closed_by_server());
  };
  expect_error("POST /echo HTTP/1.1\r\nContent-Length: 1001\r\n\r\n", 413);
  expect_error("POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3e8\r\n" + std::string(1000, 'a') +
                   "\r\n1\r\nb\r\n0\r\n\r\n",
               413);
  expect_error("GET /hello HTTP/1.1\r\nX-Big: " + std::string(2000, 'h') + "\r\n\r\n", 431);
  expect_error("GET /hello HTTP/1.1 junk\r\n\r\n", 400);
  expect_error("POST /echo HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n", 400);

  // A good request before a bad one in the same pipeline is still answered.
  raw_client c(srv->port());
  c.send("GET /hello HTTP/1.1\r\n\r\nBROKEN\r\n\r\n");
  CHECK(c.read_response().body == "hello");
  CHECK(c.read_response().status == 400);
  CHECK(c.closed_by_server());
}

TEST_CASE("idle connections are closed after the idle timeout") {
  server_options options;
  options.idle_timeout = 100ms;
  auto srv = start_server(basic_routes(), options);
  raw_client c(srv->port());
  c.send("GET /hello HTTP/1.1\r\n\r\n");
  CHECK(c.read_response().status == 200);
  CHECK(c.closed_by_server());
}

TEST_CASE("streamed chunks and SSE events arrive one by one as they are written") {
  // The producer writes piece i+1 only after the client has received piece i: if the server
  // held pieces back, the producer would wait and the test would fail at the guard.
  progress received;
  std::vector<std::thread> producers;
  router r;
  r.add("GET", "/stream", [&](request&, response res) {
    REQUIRE(res.begin_stream(200, "text/plain"));
    producers.emplace_back([&received, res]() mutable {
      for (int i = 0; i < 5; ++i) {
        if (!received.wait_for_count(i)) return;
        res.write("piece " + std::to_string(i) + ";");
      }
      res.finish();
    });
  });
  r.add("GET", "/events", [&](request&, response res) {
    sse_writer sse(res);
    REQUIRE(sse.begin());
    producers.emplace_back([&received, sse]() mutable {
      for (int i = 0; i < 5; ++i) {
        if (!received.wait_for_count(5 + i)) return;
        sse.comment();
        sse.event("{\"n\":" + std::to_string(i) + "}\nsecond line", i == 4 ? "done" : "");
      }
      sse.finish();
    });
  });
  auto srv = start_server(std::move(r), {.io_threads = 2});

  std::string body;
  int pieces = 0;
  response_handlers handlers;
  handlers.on_head = [&](const response_head& head) {
    CHECK(head.status == 200);
    return true;
  };
  handlers.on_body = [&](std::string_view bytes) {
    body.append(bytes);
    while (pieces < 5 && body.find(';', body.find("piece " + std::to_string(pieces))) != std::string::npos) {
      ++pieces;
      received.notify();
    }
    return true;
  };
  auto head = fetch_streaming(get(srv->port(), "/stream"), handlers);
  REQUIRE(head.ok());
  CHECK(body == "piece 0;piece 1;piece 2;piece 3;piece 4;");

  std::string events;
  int seen = 0;
  std::string content_type;
  handlers.on_head = [&](const response_head& h) {
    content_type = *h.headers.find("content-type");
    return true;
  };
  handlers.on_body = [&](std::string_view bytes) {
    events.append(bytes);
    std::size_t count = 0;
    for (auto at = events.find("data: second line\n\n"); at != std::string::npos;
         at = events.find("data: second line\n\n", at + 1)) {
      ++count;
    }
    while (seen < static_cast<int>(count)) {
      ++seen;
      received.notify();
    }
    return true;
  };
  head = fetch_streaming(get(srv->port(), "/events"), handlers);
  REQUIRE(head.ok());
  CHECK(content_type == "text/event-stream");
  CHECK(*head->headers.find("cache-control") == "no-cache");
  CHECK(events.find(": keepalive\n\ndata: {\"n\":0}\ndata: second line\n\n") == 0);
  CHECK(events.find("event: done\ndata: {\"n\":4}\ndata: second line\n\n") != std::string::npos);
  CHECK(seen == 5);
  for (auto& t : producers) t.join();
}

TEST_CASE("a client that goes away fires the cancellation") {
  std::promise<void> cancelled;
  std::promise<response> started;
  router r;
  r.add("GET", "/long", [&](request&, response res) {
    res.cancelled().on_cancel([&] { cancelled.set_value(); });
    res.begin_stream(200, "text/plain");
    res.write("first");
    started.set_value(res);
  });
  auto srv = start_server(std::move(r));
  auto held = started.get_future();
  {
    raw_client c(srv->port());
    c.send("GET /long HTTP/1.1\r\n\r\n");
    REQUIRE(held.wait_for(guard) == std::future_status::ready);
    c.close();
  }
  auto fired = cancelled.get_future();
  REQUIRE(fired.wait_for(guard) == std::future_status::ready);
  auto res = held.get();
  CHECK(res.cancelled().is_cancelled());
  CHECK_FALSE(res.write("late"));
}

TEST_CASE("a client that stops reading cannot make the server buffer without bound") {
  std::promise<response> started;
  std::promise<void> cancelled;
  router r;
  r.add("GET", "/flood", [&](request&, response res) {
    res.cancelled().on_cancel([&] { cancelled.set_value(); });
    res.begin_stream(200, "application/octet-stream");
    started.set_value(res);
  });
  server_options options;
  options.max_buffered_bytes = 256 * 1024;
  options.low_water_bytes = 16 * 1024;
  auto srv = start_server(std::move(r), options);
  raw_client c(srv->port());
  c.send("GET /flood HTTP/1.1\r\n\r\n");
  auto held = started.get_future();
  REQUIRE(held.wait_for(guard) == std::future_status::ready);
  auto res = held.get();
  const std::string block(64 * 1024, 'x');
  std::size_t written = 0;
  // The socket buffers take a few MiB; after that the server's own buffer fills up.
  while (written < (1u << 30) && res.write(block)) written += block.size();
  CHECK(written < (1u << 30));
  REQUIRE(cancelled.get_future().wait_for(guard) == std::future_status::ready);
  CHECK_FALSE(res.wait_writable(10ms));
}

TEST_CASE("graceful shutdown lets a request in flight finish, then closes") {
  std::atomic<bool> stopping{false};
  std::promise<void> entered;
  std::thread producer;
  router r;
  r.add("GET", "/slow", [&](request&, response res) {
    producer = std::thread([&stopping, res]() mutable {
      while (!stopping.load()) std::this_thread::sleep_for(1ms);
      std::this_thread::sleep_for(50ms);
      res.send(200, "text/plain", "finished");
    });
    entered.set_value();
  });
  auto srv = start_server(std::move(r));
  const auto port = srv->port();
  auto reply = std::async(std::launch::async, [port] { return fetch(get(port, "/slow")); });
  REQUIRE(entered.get_future().wait_for(guard) == std::future_status::ready);
  stopping = true;
  srv->stop(guard);
  producer.join();
  REQUIRE(reply.wait_for(guard) == std::future_status::ready);
  auto res = reply.get();
  REQUIRE(res.ok());
  CHECK(res->body == "finished");
  auto after = fetch(get(port, "/slow"), {.connect_timeout = 2s});
  CHECK_FALSE(after.ok());
}

TEST_CASE("shutdown past its deadline cancels what is still in flight") {
  std::promise<response> held;
  router r;
  r.add("GET", "/stuck", [&](request&, response res) { held.set_value(res); });
  auto srv = start_server(std::move(r));
  const auto port = srv->port();
  auto reply = std::async(std::launch::async, [port] { return fetch(get(port, "/stuck")); });
  auto future = held.get_future();
  REQUIRE(future.wait_for(guard) == std::future_status::ready);
  srv->stop(50ms);
  auto res = future.get();
  CHECK(res.cancelled().is_cancelled());
  CHECK_FALSE(res.send(200, "text/plain", "too late"));
  REQUIRE(reply.wait_for(guard) == std::future_status::ready);
  CHECK_FALSE(reply.get().ok());
}

TEST_CASE("many clients on several I/O threads") {
  server_options options;
  options.io_threads = 2;
  auto srv = start_server(basic_routes(), options);
  std::atomic<int> good{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < 4; ++t) {
    clients.emplace_back([&, t] {
      for (int i = 0; i < 25; ++i) {
        auto req = get(srv->port(), "/echo");
        req.method = "POST";
        req.body = std::to_string(t) + ":" + std::to_string(i);
        auto res = fetch(req);
        if (res.ok() && res->body == req.body) ++good;
      }
    });
  }
  for (auto& t : clients) t.join();
  CHECK(good.load() == 100);
}

TEST_CASE("client errors: refused connections, silent servers, stalled bodies, stopped transfers") {
  asio::io_context io;
  std::uint16_t closed_port;
  {
    asio::ip::tcp::acceptor probe(io, {asio::ip::make_address("127.0.0.1"), 0});
    closed_port = probe.local_endpoint().port();
  }
  auto refused = fetch(get(closed_port, "/"));
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.err().code() == errc::unavailable);

  // Listening, but nobody ever answers: the kernel completes the handshake from the backlog.
  asio::ip::tcp::acceptor silent(io, {asio::ip::make_address("127.0.0.1"), 0});
  auto quiet = fetch(get(silent.local_endpoint().port(), "/"), {.first_byte_timeout = 200ms});
  REQUIRE_FALSE(quiet.ok());
  CHECK(quiet.err().code() == errc::timeout);

  std::promise<response> held;
  router r;
  r.add("GET", "/stall", [&](request&, response res) {
    res.begin_stream(200, "text/plain");
    res.write("some");
    held.set_value(res);
  });
  r.add("GET", "/hello", [](request&, response res) { res.send(200, "text/plain", "hello"); });
  auto srv = start_server(std::move(r));
  std::string got;
  response_handlers handlers;
  handlers.on_body = [&](std::string_view bytes) {
    got.append(bytes);
    return true;
  };
  auto stalled = fetch_streaming(get(srv->port(), "/stall"), handlers, {.idle_timeout = 200ms});
  REQUIRE_FALSE(stalled.ok());
  CHECK(stalled.err().code() == errc::timeout);
  CHECK(got == "some");

  handlers.on_body = [](std::string_view) { return false; };
  auto stopped = fetch_streaming(get(srv->port(), "/hello"), handlers);
  REQUIRE_FALSE(stopped.ok());
  CHECK(stopped.err().code() == errc::cancelled);

  auto by_name = get(srv->port(), "/hello");
  by_name.host = "example.org";
  auto bad_host = fetch(by_name);
  REQUIRE_FALSE(bad_host.ok());
  CHECK(bad_host.err().code() == errc::invalid_argument);
}

TEST_CASE("IPv6 literals work on both sides where the host has IPv6") {
  auto srv = server::start({.host = "::1"}, basic_routes());
  if (!srv.ok()) return;  // no IPv6 loopback in this environment
  auto req = get((*srv)->port(), "/hello");
  req.host = "[::1]";
  auto res = fetch(req);
  REQUIRE(res.ok());
  CHECK(res->body == "hello");
}

TEST_CASE("host names resolve to address literals for the client") {
  CHECK(*http::resolve_address("127.0.0.1") == "127.0.0.1");
  auto local = http::resolve_address("localhost");
  REQUIRE(local);
  CHECK((*local == "127.0.0.1" || *local == "::1"));
  auto missing = http::resolve_address("no-such-host.invalid");
  REQUIRE_FALSE(missing);
  CHECK(missing.err().code() == errc::not_found);
}

namespace {

// A server on a raw socket that accepts one connection only and answers each request read on
// it with the next of `answers`, so that a second connection would get nothing. After the last
// answer it ends its side of the connection.
class one_connection_server {
 public:
  explicit one_connection_server(std::vector<std::string> answers)
      : acceptor_(io_, {asio::ip::make_address("127.0.0.1"), 0}) {
    thread_ = std::thread([this, answers = std::move(answers)] {
      asio::ip::tcp::socket socket(io_);
      acceptor_.accept(socket);
      std::string buffer;
      char chunk[4096];
      for (const auto& answer : answers) {
        while (buffer.find("\r\n\r\n") == std::string::npos) {
          std::error_code ec;
          const auto n = socket.read_some(asio::buffer(chunk), ec);
          if (ec) return;
          buffer.append(chunk, n);
        }
        requests_ += buffer.substr(0, buffer.find("\r\n\r\n") + 4);
        buffer.erase(0, buffer.find("\r\n\r\n") + 4);
        asio::write(socket, asio::buffer(answer));
      }
      std::error_code ec;
      socket.shutdown(asio::ip::tcp::socket::shutdown_send, ec);
      socket.read_some(asio::buffer(chunk), ec);  // until the client closes
    });
  }
  ~one_connection_server() {
    if (thread_.joinable()) thread_.join();
  }

  std::uint16_t port() const { return acceptor_.local_endpoint().port(); }
  // What the requests said; waits for the client to close the connection.
  const std::string& requests() {
    if (thread_.joinable()) thread_.join();
    return requests_;
  }

 private:
  asio::io_context io_;
  asio::ip::tcp::acceptor acceptor_;
  std::thread thread_;
  std::string requests_;
};

}  // namespace

TEST_CASE("a client connection carries requests one after another on one socket") {
  one_connection_server srv({"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none",
                             "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\ntwo\r\n0\r\n\r\n",
                             "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nthree"});
  {
    auto conn = client_connection::open("127.0.0.1", srv.port(), {.connect_timeout = guard});
    REQUIRE(conn);
    client_request req;
    req.target = "/a";
    auto one = conn->fetch(req, {.first_byte_timeout = guard});
    REQUIRE(one);
    CHECK(one->body == "one");
    CHECK(conn->reusable());
    req.target = "/b";
    auto two = conn->fetch(req, {.first_byte_timeout = guard});
    REQUIRE(two);
    CHECK(two->body == "two");
    CHECK(conn->reusable());
    req.target = "/c";
    auto three = conn->fetch(req, {.first_byte_timeout = guard});
    REQUIRE(three);
    CHECK(three->body == "three");
    // The server asked to close: no more requests on this connection.
    CHECK_FALSE(conn->reusable());
    auto four = conn->fetch(req);
    REQUIRE_FALSE(four);
    CHECK(four.err().code() == errc::unavailable);
  }
  const std::string& requests = srv.requests();
  CHECK(requests.find("GET /a HTTP/1.1\r\nHost: 127.0.0.1:") != std::string::npos);
  CHECK(requests.find("GET /c HTTP/1.1\r\n") != std::string::npos);
  // Unlike fetch(), a client connection does not ask the server to close.
  CHECK(requests.find("Connection: close") == std::string::npos);
}

TEST_CASE("a client connection is not reused after a response framed by the close or followed by more bytes") {
  for (const std::string& answer : {std::string("HTTP/1.1 200 OK\r\n\r\nuntil the end"),
                                   std::string("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n"),
                                   std::string("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")}) {
    CAPTURE(answer);
    one_connection_server srv({answer});
    auto conn = client_connection::open("127.0.0.1", srv.port());
    REQUIRE(conn);
    client_request req;
    auto first = conn->fetch(req, {.first_byte_timeout = guard});
    REQUIRE(first);
    CHECK(first->body.substr(0, 2) == (answer.find("until") != std::string::npos ? "un" : "ok"));
    CHECK_FALSE(conn->reusable());
    auto second = conn->fetch(req);
    REQUIRE_FALSE(second);
    CHECK(second.err().code() == errc::unavailable);
  }
}
