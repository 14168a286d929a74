// A blocking HTTP/1.1 client over plain TCP, with connect, first-byte and idle deadlines and
// response bodies streamed to a callback as they arrive.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
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

// The first address of a host name (or the literal itself) as text, for client_request::host.
// Errors: not_found when the name does not resolve.
// Thread safety: a free function (getaddrinfo).
result<std::string> resolve_address(const std::string& host);

}  // namespace chatai::http
