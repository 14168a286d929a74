// The blocking HTTP client: each step of a connection run under its own deadline; fetch_streaming
// opens a connection for one request, client_connection keeps it for the next.
#include "chatai/core/http_client.hpp"

#include <arpa/inet.h>
#include <netdb.h>

#include <array>
#include <optional>

#include <asio.hpp>

namespace chatai::http {

using asio::ip::tcp;

namespace {

bool has_line_break(std::string_view s) { return s.find_first_of("\r\n") != std::string_view::npos; }

// Runs asynchronous steps of one connection on a private io_context, each under a deadline.
class session {
 public:
  tcp::socket& socket() noexcept { return socket_; }

  // Starts an operation with `start(handler)` and runs until it completes or `timeout` passes;
  // then the socket is closed so the operation ends with operation_aborted, and timed_out is
  // returned.
  template <class Start>
  std::error_code run(std::chrono::milliseconds timeout, Start&& start, std::size_t* transferred = nullptr) {
    std::optional<std::error_code> outcome;
    std::size_t bytes = 0;
    start([&](std::error_code ec, std::size_t n) {
      outcome = ec;
      bytes = n;
    });
    io_.restart();
    io_.run_for(timeout);
    if (!outcome) {
      std::error_code ignored;
      socket_.close(ignored);
      io_.restart();
      io_.run();
      return asio::error::timed_out;
    }
    if (transferred) *transferred = bytes;
    return *outcome;
  }

 private:
  asio::io_context io_;
  tcp::socket socket_{io_};
};

// "http POST 127.0.0.1:8080/v1/chat/completions": what errors start with.
std::string where_of(std::string_view method, std::string_view host, std::uint16_t port, std::string_view target) {
  return "http " + std::string(method) + " " + std::string(host) + ":" + std::to_string(port) + std::string(target);
}

error socket_error(std::string_view what, const std::string& where, std::error_code ec) {
  const auto prefix = where + ": ";
  if (ec == asio::error::timed_out) return error(errc::timeout, prefix + std::string(what) + " timed out");
  if (ec == asio::error::connection_refused || ec == asio::error::connection_reset ||
      ec == asio::error::connection_aborted || ec == asio::error::broken_pipe || ec == asio::error::eof ||
      ec == asio::error::host_unreachable || ec == asio::error::network_unreachable) {
    return error(errc::unavailable, prefix + std::string(what) + ": " + ec.message());
  }
  return error(errc::io_error, prefix + std::string(what) + ": " + ec.message());
}

// `close`: ask the server to close the connection after its response, unless `req` says otherwise.
result<std::string> serialize(const client_request& req, const std::string& host_literal, std::uint16_t port, bool close) {
  if (req.method.empty() || req.method.find_first_of(" \r\n") != std::string::npos) {
    return error(errc::invalid_argument, "http request: invalid method");
  }
  if (req.target.empty() || req.target.front() != '/' || req.target.find_first_of(" \r\n") != std::string::npos) {
    return error(errc::invalid_argument, "http request: the target must be a path without spaces");
  }
  std::string out;
  out.reserve(256 + req.body.size());
  out += req.method;
  out += ' ';
  out += req.target;
  out += " HTTP/1.1\r\n";
  for (const auto& f : req.headers) {
    if (f.name.empty() || f.name.find_first_of(": \t") != std::string::npos || has_line_break(f.name) ||
        has_line_break(f.value)) {
      return error(errc::invalid_argument, "http request: invalid header field '" + f.name + "'");
    }
    out += f.name;
    out += ": ";
    out += f.value;
    out += "\r\n";
  }
  if (!req.headers.find("host")) {
    out += "Host: ";
    out += host_literal;
    out += ':';
    out += std::to_string(port);
    out += "\r\n";
  }
  const bool needs_length = !req.body.empty() || req.method == "POST" || req.method == "PUT" || req.method == "PATCH";
  if (needs_length && !req.headers.find("content-length") && !req.headers.find("transfer-encoding")) {
    out += "Content-Length: ";
    out += std::to_string(req.body.size());
    out += "\r\n";
  }
  if (close && !req.headers.find("connection")) out += "Connection: close\r\n";
  out += "\r\n";
  out += req.body;
  return out;
}

// The address literal of `host` ("::1" and "[::1]" both name IPv6 loopback).
result<asio::ip::address> parse_address(const std::string& host) {
  std::string literal = host;
  if (literal.size() > 2 && literal.front() == '[' && literal.back() == ']') literal = literal.substr(1, literal.size() - 2);
  std::error_code ec;
  const auto address = asio::ip::make_address(literal, ec);
  if (ec) return error(errc::invalid_argument, "http request: '" + host + "' is not an IP address");
  return address;
}

// Runs `streaming` (a fetch_streaming) with handlers that collect the whole body.
template <class Streaming>
result<client_response> collect_body(Streaming&& streaming) {
  client_response out;
  response_handlers handlers;
  handlers.on_body = [&](std::string_view bytes) {
    out.body.append(bytes);
    return true;
  };
  auto head = streaming(handlers);
  if (!head) return std::move(head).err();
  out.status = head->status;
  out.headers = std::move(head->headers);
  return out;
}

}  // namespace

struct client_connection::state {
  session s;
  asio::ip::address address;
  std::string host_literal;  // as the Host field writes it: "[::1]" for IPv6
  std::uint16_t port = 0;
  bool reusable = true;

  // Connects; errors start with `where`.
  static result<std::unique_ptr<state>> connect(const asio::ip::address& address, std::uint16_t port,
                                                const client_options& options, const std::string& where);
  // One request and its response. `close`: the request asks the server to close afterwards.
  result<response_head> exchange(const client_request& req, const response_handlers& handlers,
                                 const client_options& options, bool close);
};

result<std::unique_ptr<client_connection::state>> client_connection::state::connect(
    const asio::ip::address& address, std::uint16_t port, const client_options& options, const std::string& where) {
  auto st = std::make_unique<state>();
  st->address = address;
  st->host_literal = address.is_v6() ? "[" + address.to_string() + "]" : address.to_string();
  st->port = port;
  const tcp::endpoint endpoint(address, port);
  std::error_code ec = st->s.run(options.connect_timeout, [&](auto handler) {
    st->s.socket().async_connect(endpoint, [handler](std::error_code e) mutable { handler(e, 0); });
  });
  if (ec) return socket_error("connect", where, ec);
  st->s.socket().set_option(tcp::no_delay(true), ec);
  return st;
}

result<response_head> client_connection::state::exchange(const client_request& req, const response_handlers& handlers,
                                                         const client_options& options, bool close) {
  const std::string where = where_of(req.method, address.to_string(), port, req.target);
  if (!reusable) return error(errc::unavailable, where + ": the connection can carry no more requests");
  auto wire = serialize(req, host_literal, port, close);
  if (!wire) return std::move(wire).err();
  // Only a complete response that leaves the connection clean makes it usable again.
  reusable = false;

  std::error_code ec =
      s.run(options.idle_timeout, [&](auto handler) { asio::async_write(s.socket(), asio::buffer(*wire), handler); });
  if (ec) return socket_error("sending the request", where, ec);

  response_parser parser(req.method == "HEAD", options.max_header_bytes);
  bool head_delivered = false;
  bool stopped_by_handler = false;
  bool ended_by_close = false;
  const auto deliver_head = [&] {
    if (head_delivered || !parser.head_complete()) return true;
    head_delivered = true;
    if (handlers.on_head && !handlers.on_head(parser.head())) {
      stopped_by_handler = true;
      return false;
    }
    return true;
  };
  const auto sink = [&](std::string_view bytes) {
    if (!deliver_head()) return false;
    if (handlers.on_body && !handlers.on_body(bytes)) {
      stopped_by_handler = true;
      return false;
    }
    return true;
  };

  std::array<char, 16 * 1024> buffer;
  bool first_read = true;
  bool received_any = false;
  while (true) {
    std::size_t n = 0;
    ec = s.run(
        first_read ? options.first_byte_timeout : options.idle_timeout,
        [&](auto handler) { s.socket().async_read_some(asio::buffer(buffer), handler); }, &n);
    const char* step = first_read ? "waiting for the response" : "reading the response";
    first_read = false;
    parse_state st;
    if (ec == asio::error::eof && received_any) {
      st = parser.finish_at_eof();
      ended_by_close = true;
    } else if (ec) {
      return socket_error(step, where, ec);
    } else {
      received_any = true;
      st = parser.feed(std::string_view(buffer.data(), n), sink);
    }
    if (st != parse_state::failed && !deliver_head()) st = parse_state::failed;
    if (stopped_by_handler) return error(errc::cancelled, "http response: the receiver stopped the transfer");
    if (st == parse_state::failed) return error(errc::parse_error, "http response: " + parser.error_message());
    if (st == parse_state::complete) break;
  }
  const auto& head = parser.head();
  reusable = !close && !ended_by_close && !parser.bytes_after_end() && head.version_minor >= 1 &&
             !req.headers.has_token("connection", "close") && !head.headers.has_token("connection", "close");
  if (!reusable) {
    std::error_code ignored;
    s.socket().shutdown(tcp::socket::shutdown_both, ignored);
  }
  return head;
}

result<client_connection> client_connection::open(const std::string& host, std::uint16_t port,
                                                  const client_options& options) {
  auto address = parse_address(host);
  if (!address) return std::move(address).err();
  auto st = state::connect(*address, port, options, "http " + address->to_string() + ":" + std::to_string(port));
  if (!st) return std::move(st).err();
  return client_connection(std::move(*st));
}

client_connection::client_connection(std::unique_ptr<state> s) : state_(std::move(s)) {}
client_connection::client_connection(client_connection&&) noexcept = default;
client_connection& client_connection::operator=(client_connection&&) noexcept = default;
client_connection::~client_connection() = default;

result<response_head> client_connection::fetch_streaming(const client_request& req, const response_handlers& handlers,
                                                         const client_options& options) {
  return state_->exchange(req, handlers, options, false);
}

result<client_response> client_connection::fetch(const client_request& req, const client_options& options) {
  return collect_body([&](const response_handlers& h) { return fetch_streaming(req, h, options); });
}

bool client_connection::reusable() const noexcept { return state_ && state_->reusable; }

result<response_head> fetch_streaming(const client_request& req, const response_handlers& handlers,
                                      const client_options& options) {
  auto address = parse_address(req.host);
  if (!address) return std::move(address).err();
  // A request that cannot be sent is refused before connecting.
  const std::string host_literal = address->is_v6() ? "[" + address->to_string() + "]" : address->to_string();
  if (auto wire = serialize(req, host_literal, req.port, true); !wire) return std::move(wire).err();
  auto st = client_connection::state::connect(*address, req.port, options,
                                              where_of(req.method, req.host, req.port, req.target));
  if (!st) return std::move(st).err();
  return (*st)->exchange(req, handlers, options, true);
}

result<client_response> fetch(const client_request& req, const client_options& options) {
  return collect_body([&](const response_handlers& h) { return fetch_streaming(req, h, options); });
}

result<std::string> resolve_address(const std::string& host) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (::getaddrinfo(host.c_str(), nullptr, &hints, &found) != 0 || !found)
    return error(errc::not_found, "host \"" + host + "\" does not resolve");
  char text[INET6_ADDRSTRLEN] = {};
  const void* address = found->ai_family == AF_INET6
                            ? static_cast<const void*>(&reinterpret_cast<sockaddr_in6*>(found->ai_addr)->sin6_addr)
                            : static_cast<const void*>(&reinterpret_cast<sockaddr_in*>(found->ai_addr)->sin_addr);
  const bool ok = ::inet_ntop(found->ai_family, address, text, sizeof text) != nullptr;
  ::freeaddrinfo(found);
  if (!ok) return error(errc::not_found, "host \"" + host + "\" has no usable address");
  return std::string(text);
}

}  // namespace chatai::http
