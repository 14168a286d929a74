// A blocking HTTP/1.1 client over plain TCP, with connect, first-byte and idle deadlines and
// response bodies streamed to a callback as they arrive: one request per connection, or
// several one after another on a kept-alive connection.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "chatai/core/http_parser.hpp"
#include "chatai/core/status.hpp"

namespace chatai::http {

struct client_request {
  std::string method = "GET";
  std::string host;  // an IPv4 or IPv6 address literal ("127.0.0.1", "::1" or "[::1]")
  std::uint16_t port = 80;
  std::string target = "/";  // path and query
  http::headers headers;     // Host, Content-Length and Connection are added unless present
  std::string body;
};

struct client_options {
  std::chrono::milliseconds connect_timeout{std::chrono::seconds(5)};
  // From the request being sent to the first byte of the response.
  std::chrono::milliseconds first_byte_timeout{std::chrono::seconds(60)};
  // Between two reads of the response, and for writing the request.
  std::chrono::milliseconds idle_timeout{std::chrono::seconds(60)};
  std::size_t max_header_bytes = 64 * 1024;
};

// A whole response.
struct client_response {
  int status = 0;
  http::headers headers;
  std::string body;
};

// Receives a response as it arrives: the head once, then the body in pieces. Returning false
// from either stops the transfer; fetch then fails with errc::cancelled.
struct response_handlers {
  std::function<bool(const response_head&)> on_head;
  std::function<bool(std::string_view)> on_body;
};

// Sends one request on a new connection and streams the response. Errors: invalid_argument
// (host is not an address literal), unavailable (connect refused or reset), timeout (one of
// the deadlines passed), parse_error (a malformed response), cancelled (a handler said stop),
// io_error (other socket failures).
// Thread safety: a free function; concurrent calls share nothing.
result<response_head> fetch_streaming(const client_request& req, const response_handlers& handlers,
                                      const client_options& options = {});

// The same, collecting the body.
result<client_response> fetch(const client_request& req, const client_options& options = {});

// One connection that carries requests one after another (HTTP/1.1 keep-alive, never
// pipelined), so that a caller knows the same peer answered all of them: no other process
// can take the port over between two requests.
// Thread safety: not thread-safe; one thread at a time. Distinct connections share nothing.
class client_connection {
 public:
  // Connects to `host` (an address literal as in client_request) within
  // options.connect_timeout. Errors: invalid_argument (not an address literal), unavailable,
  // timeout, io_error.
  static result<client_connection> open(const std::string& host, std::uint16_t port, const client_options& options = {});

  client_connection(client_connection&&) noexcept;
  client_connection& operator=(client_connection&&) noexcept;
  ~client_connection();

  // Sends `req` on this connection (its host and port are not used: the connection's are) and
  // streams the response, with the deadlines of `options` (its connect_timeout is not used).
  // Unlike fetch_streaming, no "Connection: close" is added: the connection stays open for
  // the next request unless `req` or the response asks to close it. Errors: those of
  // fetch_streaming, and unavailable when the connection can carry no more requests.
  result<response_head> fetch_streaming(const client_request& req, const response_handlers& handlers,
                                        const client_options& options = {});
  result<client_response> fetch(const client_request& req, const client_options& options = {});

  // Whether another request may be sent: every response so far was complete, framed by its
  // length or chunked, had nothing after its end, and neither side asked to close.
  bool reusable() const noexcept;
  // reusable(), and the peer has neither closed the connection nor sent anything since the
  // last response (a check without waiting, before an idle connection is used again).
  bool still_open() const noexcept;

 private:
  struct state;
  friend result<response_head> fetch_streaming(const client_request&, const response_handlers&, const client_options&);
  explicit client_connection(std::unique_ptr<state> s);
  std::unique_ptr<state> state_;
};

// The first address of a host name (or the literal itself) as text, for client_request::host.
// Errors: not_found when the name does not resolve.
// Thread safety: a free function (getaddrinfo).
result<std::string> resolve_address(const std::string& host);

}  // namespace chatai::http
