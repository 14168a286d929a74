// The blocking HTTP client: each step of a connection run under its own deadline (poll on a
// non-blocking socket); fetch_streaming
// opens a connection for one request, client_connection keeps it for the next.
#include "chatai/core/http_client.hpp"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <array>
#include <optional>

#include <asio.hpp>

#include "chatai/core/unique_fd.hpp"

namespace chatai::http {

namespace {

bool has_line_break(std::string_view s) { return s.find_first_of("\r\n") != std::string_view::npos; }

// One connection's socket, non-blocking, each step under its own deadline (poll). Errors are
// the system's codes, asio::error::eof for end-of-file and asio::error::timed_out for a
// deadline passed. No event loop is set up per connection: the gate opens one per request.
class session {
 public:
  std::error_code connect(const asio::ip::address& address, std::uint16_t port, std::chrono::milliseconds timeout) {
    sockaddr_storage storage{};
    socklen_t length = 0;
    if (address.is_v6()) {
      auto* a = reinterpret_cast<sockaddr_in6*>(&storage);
      a->sin6_family = AF_INET6;
      a->sin6_port = htons(port);
      const auto bytes = address.to_v6().to_bytes();
      std::memcpy(&a->sin6_addr, bytes.data(), bytes.size());
      a->sin6_scope_id = address.to_v6().scope_id();
      length = sizeof *a;
    } else {
      auto* a = reinterpret_cast<sockaddr_in*>(&storage);
      a->sin_family = AF_INET;
      a->sin_port = htons(port);
      const auto bytes = address.to_v4().to_bytes();
      std::memcpy(&a->sin_addr, bytes.data(), bytes.size());
      length = sizeof *a;
    }
    fd_.reset(::socket(storage.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd_) return last_error();
    if (::connect(fd_.get(), reinterpret_cast<const sockaddr*>(&storage), length) != 0) {
      if (errno != EINPROGRESS) return last_error();
      if (auto ec = wait(POLLOUT, clock::now() + timeout)) return ec;
      int failure = 0;
      socklen_t size = sizeof failure;
      if (::getsockopt(fd_.get(), SOL_SOCKET, SO_ERROR, &failure, &size) != 0) return last_error();
      if (failure != 0) return {failure, asio::error::get_system_category()};
    }
    const int one = 1;  // requests and answers are small: Nagle's algorithm would hold them back
    ::setsockopt(fd_.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return {};
  }

  std::error_code write_all(std::string_view data, std::chrono::milliseconds timeout) {
    const auto deadline = clock::now() + timeout;
    while (!data.empty()) {
      const ssize_t n = ::send(fd_.get(), data.data(), data.size(), MSG_NOSIGNAL);
      if (n > 0) {
        data.remove_prefix(static_cast<std::size_t>(n));
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno != EAGAIN) return last_error();
      if (auto ec = wait(POLLOUT, deadline)) return ec;
    }
    return {};
  }

  // Reads what is there (at least one byte) into `buffer`; `n` is how much.
  std::error_code read_some(char* buffer, std::size_t size, std::chrono::milliseconds timeout, std::size_t& n) {
    const auto deadline = clock::now() + timeout;
    for (;;) {
      const ssize_t got = ::recv(fd_.get(), buffer, size, 0);
      if (got > 0) {
        n = static_cast<std::size_t>(got);
        return {};
      }
      if (got == 0) return asio::error::eof;
      if (errno == EINTR) continue;
      if (errno != EAGAIN) return last_error();
      if (auto ec = wait(POLLIN, deadline)) return ec;
    }
  }

  void shutdown() noexcept { ::shutdown(fd_.get(), SHUT_RDWR); }

  // Nothing to read and no hang-up: an idle keep-alive connection the peer has not closed.
  bool quiet() const noexcept {
    pollfd p{fd_.get(), POLLIN | POLLRDHUP, 0};
    return fd_ && ::poll(&p, 1, 0) == 0;
  }

 private:
  using clock = std::chrono::steady_clock;

  // In asio's category, so that the codes compare equal to asio::error's.
  static std::error_code last_error() { return {errno, asio::error::get_system_category()}; }

  std::error_code wait(short events, clock::time_point deadline) {
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now()).count();
      if (left <= 0) return asio::error::timed_out;
      pollfd p{fd_.get(), events, 0};
      const int ready = ::poll(&p, 1, static_cast<int>(std::min<long long>(left, 1 << 30)));
      if (ready > 0) return {};  // readiness, an error or a hang-up: the next call tells which
      if (ready < 0 && errno != EINTR) return last_error();
    }
  }


  unique_fd fd_;
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
  if (std::error_code ec = st->s.connect(address, port, options.connect_timeout)) return socket_error("connect", where, ec);
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

  std::error_code ec = s.write_all(*wire, options.idle_timeout);
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
    ec = s.read_some(buffer.data(), buffer.size(), first_read ? options.first_byte_timeout : options.idle_timeout, n);
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
  if (!reusable) s.shutdown();
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

bool client_connection::still_open() const noexcept { return reusable() && state_->s.quiet(); }

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
