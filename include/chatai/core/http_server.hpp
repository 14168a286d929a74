// HTTP/1.1 server on Asio: routing, keep-alive, pipelining, streamed and SSE responses that
// any thread may write, cancellation when the client goes away, and graceful shutdown.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "chatai/core/cancellation.hpp"
#include "chatai/core/http_parser.hpp"
#include "chatai/core/status.hpp"

namespace chatai::http {

struct server_options {
  std::string host = "127.0.0.1";  // an IPv4 or IPv6 address literal
  std::uint16_t port = 0;          // 0: any free port; see server::port()
  int io_threads = 1;
  parser_limits limits;
  std::chrono::milliseconds idle_timeout{std::chrono::seconds(60)};  // between requests
  // Response bytes a connection may hold unsent. A write beyond it fails and drops the
  // connection: a client that stops reading cannot make the server buffer without bound.
  std::size_t max_buffered_bytes = 8 * 1024 * 1024;
  // response::wait_writable() returns once fewer bytes than this are unsent.
  std::size_t low_water_bytes = 64 * 1024;
};

namespace detail {
struct response_state;
}

// The answer to one request: either one whole response (send) or a stream (begin_stream,
// write..., finish). Every write is handed to the socket as soon as the connection can take it.
// A handler that drops its last copy without answering gets a 500 sent for it (or, mid-stream,
// the connection closed, so the client sees the body cut short).
// Thread safety: copies share one response; members may be called from any thread, but the
// calls for one response must not overlap (one producer at a time).
class response {
 public:
  // Whole responses with Content-Length. False when a response was already started or the
  // client is gone. `extra` fields must be valid (token names, no CR or LF in values).
  bool send(int status, std::string_view content_type, std::string_view body, const headers& extra = {});
  // An OpenAI-style error: {"error":{"message":...,"type":...,"param":null,"code":null}}.
  bool send_error(int status, std::string_view message, std::string_view type = "invalid_request_error");

  // Starts a streamed body: chunked for HTTP/1.1 clients, ended by closing for HTTP/1.0 ones.
  bool begin_stream(int status, std::string_view content_type, const headers& extra = {});
  // Queues one piece of the body. False when the client is gone, or when the unsent bytes
  // would pass server_options::max_buffered_bytes (the connection is then dropped).
  bool write(std::string_view data);
  // Ends the stream.
  bool finish();

  // Response bytes of this connection not yet written to the socket.
  std::size_t buffered_bytes() const noexcept;
  // Back-pressure for producers that may block: waits until fewer than low_water_bytes are
  // unsent (true), or the client is gone or `timeout` passes (false). Never call it from a
  // handler while it runs on the I/O thread: that thread is the one that drains the buffer.
  bool wait_writable(std::chrono::milliseconds timeout) const;

  // Fires when the connection closes or fails before the response is complete.
  const cancellation& cancelled() const noexcept;
  // True once send() or begin_stream() has been called.
  bool started() const;

 private:
  friend class connection;
  explicit response(std::shared_ptr<detail::response_state> state) : state_(std::move(state)) {}

  std::shared_ptr<detail::response_state> state_;
};

// Server-sent events over a streamed response: each event is written and flushed on its own.
// Thread safety: as response.
class sse_writer {
 public:
  explicit sse_writer(response res) : response_(std::move(res)) {}

  // Starts "200 text/event-stream" with Cache-Control: no-cache.
  bool begin(const headers& extra = {});
  // "event: <name>\n" when a name is given, one "data: " line per line of `data`, then "\n".
  bool event(std::string_view data, std::string_view name = {});
  // ": <text>\n\n", ignored by clients; keeps proxies from timing the stream out.
  bool comment(std::string_view text = "keepalive");
  bool finish() { return response_.finish(); }

  http::response& raw() noexcept { return response_; }

 private:
  http::response response_;
};

// A handler answers through `res`, now or later from any thread. It may move from `req`.
using handler = std::function<void(request& req, response res)>;

// Maps method and path to handlers. Exact paths win over prefixes; the longest prefix wins.
// A known path with another method gets 405 with Allow, anything else 404.
// Thread safety: not thread-safe while being built; read-only once given to a server.
class router {
 public:
  void add(std::string method, std::string path, handler fn);
  // Matches every path that starts with `prefix`.
  void add_prefix(std::string method, std::string prefix, handler fn);

  // The handler for a request, or nullptr with `allow` set to the methods the path has
  // (empty when the path is unknown).
  const handler* find(std::string_view method, std::string_view path, std::string& allow) const;

 private:
  struct route {
    std::string method;
    std::string path;
    bool prefix;
    handler fn;
  };
  std::vector<route> routes_;
};

// A running server. Handlers run on the I/O threads.
// Thread safety: port() from any thread; stop() from one thread, never from a handler.
class server {
 public:
  // Binds, listens and starts the I/O threads.
  static result<std::unique_ptr<server>> start(server_options options, router routes);
  ~server();  // stop(0)
  server(const server&) = delete;
  server& operator=(const server&) = delete;

  // The bound port (the real one when options.port was 0).
  std::uint16_t port() const noexcept;

  // Stops accepting, closes idle connections, lets responses in flight finish until `grace`
  // passes, then closes the rest (their cancellations fire) and joins the I/O threads.
  // Responses still held by producers afterwards report the client as gone.
  void stop(std::chrono::milliseconds grace);

  class impl;

 private:
  explicit server(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

}  // namespace chatai::http
