// The HTTP/1.1 server: one strand per connection, responses posted onto it from any thread.
#include "chatai/core/http_server.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <charconv>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <unordered_map>

#include <asio.hpp>

#include "chatai/core/json.hpp"
#include "chatai/core/log.hpp"

namespace chatai::http {

using asio::ip::tcp;

namespace {

// While a response is in flight the connection keeps reading (to see the client leave) until
// this much of the next requests is buffered.
constexpr std::size_t max_read_ahead_bytes = 64 * 1024;
// After a response that closes the connection, unread request bytes are drained this long so
// the client receives the response rather than a reset.
constexpr auto linger_time = std::chrono::seconds(2);

bool valid_extra_headers(const headers& extra) {
  for (const auto& f : extra) {
    if (f.name.empty() || f.name.find_first_of(":\r\n \t") != std::string::npos ||
        f.value.find_first_of("\r\n") != std::string::npos) {
      return false;
    }
  }
  return true;
}

std::string error_body(std::string_view message, std::string_view type) {
  std::string body = "{\"error\":{\"message\":";
  json::append_quoted(body, message);
  body += ",\"type\":";
  json::append_quoted(body, type);
  body += ",\"param\":null,\"code\":null}}";
  return body;
}

void append_number(std::string& out, std::uint64_t value, int base = 10) {
  char digits[24];
  const auto end = std::to_chars(digits, digits + sizeof digits, value, base).ptr;
  out.append(digits, end);
}

}  // namespace

class connection;

namespace detail {

// What one response shares between its copies, its producer and its connection.
struct response_state {
  std::weak_ptr<connection> conn;
  cancellation token;
  int version_minor = 1;
  bool keep_alive = true;
  std::mutex mutex;  // guards `current`; the other fields are fixed once the stream starts
  enum class stage { idle, streaming, done };
  stage current = stage::idle;
  bool chunked = false;

  ~response_state();
};

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// server::impl

class server::impl {
 public:
  impl(server_options options, router routes)
      : options_(std::move(options)), routes_(std::move(routes)), acceptor_(asio::make_strand(io_)) {}

  status listen();
  void run_threads();
  void stop(std::chrono::milliseconds grace);
  void forget(connection* conn);

  const server_options& options() const noexcept { return options_; }
  const router& routes() const noexcept { return routes_; }
  bool stopping() const noexcept { return stopping_.load(); }
  std::uint16_t port() const noexcept { return port_; }

 private:
  void accept();

  server_options options_;
  router routes_;
  asio::io_context io_;
  tcp::acceptor acceptor_;
  asio::steady_timer accept_retry_{acceptor_.get_executor()};
  asio::executor_work_guard<asio::io_context::executor_type> work_{io_.get_executor()};
  std::vector<std::thread> threads_;
  std::uint16_t port_ = 0;
  std::atomic<bool> stopping_{false};
  bool stopped_ = false;

  std::mutex mutex_;
  std::condition_variable all_closed_;
  std::unordered_map<connection*, std::shared_ptr<connection>> connections_;
};

// ---------------------------------------------------------------------------------------------
// connection: all members run on the strand unless noted.

class connection : public std::enable_shared_from_this<connection> {
 public:
  connection(server::impl& owner, tcp::socket socket)
      : owner_(owner),
        socket_(std::move(socket)),
        strand_(socket_.get_executor()),
        timer_(socket_.get_executor()),
        parser_(owner.options().limits) {}

  // From the acceptor: begins serving on the connection's own strand.
  void start() {
    asio::post(strand_, [self = shared_from_this()] {
      std::error_code ignored;
      self->socket_.set_option(tcp::no_delay(true), ignored);
      const auto peer = self->socket_.remote_endpoint(ignored);
      if (!ignored) self->remote_address_ = peer.address().to_string();
      self->start_read();
      self->arm_idle_timer();
    });
  }

  // From any thread: the server is stopping; finish the current response, then close.
  void drain() {
    asio::dispatch(strand_, [self = shared_from_this()] {
      if (!self->responding_ && self->out_.empty() && !self->write_in_flight_) self->close();
    });
  }
  // From any thread: close at once.
  void abort() {
    asio::dispatch(strand_, [self = shared_from_this()] { self->close(); });
  }

  // From any thread: queue response bytes; `last` ends the response.
  bool deliver(std::string bytes, bool last, bool keep_alive) {
    if (gone_.load()) return false;
    unsent_ += bytes.size();
    if (unsent_.load() > owner_.options().max_buffered_bytes) {
      log::warn("http: client does not read its response; dropping the connection");
      asio::post(strand_, [self = shared_from_this()] { self->close(); });
      return false;
    }
    asio::dispatch(strand_, [self = shared_from_this(), bytes = std::move(bytes), last, keep_alive]() mutable {
      self->on_deliver(std::move(bytes), last, keep_alive);
    });
    return true;
  }

  // From any thread: the handler dropped its response without finishing it.
  void abandon(bool started, int version_minor) {
    if (!started) {
      std::string message = "the handler did not respond";
      log::error("http: handler did not respond");
      deliver(build_whole(500, "application/json", error_body(message, "server_error"), {}, version_minor, false),
              true, false);
      return;
    }
    abort();
  }

  std::size_t unsent() const noexcept { return unsent_.load(); }
  bool gone() const noexcept { return gone_.load(); }

  bool wait_writable(std::chrono::milliseconds timeout) {
    std::unique_lock lock(wait_mutex_);
    return wait_cv_.wait_for(lock, timeout, [&] {
      return gone_.load() || unsent_.load() < owner_.options().low_water_bytes;
    }) && !gone_.load();
  }

  // Builds a complete response head (and body) in one buffer.
  static std::string build_head(int status, std::string_view content_type, const headers& extra, int version_minor,
                                bool keep_alive, std::string_view framing, std::size_t reserve) {
    std::string out;
    out.reserve(128 + reserve);
    out += "HTTP/1.1 ";
    append_number(out, static_cast<std::uint64_t>(status));
    out += ' ';
    out += reason_phrase(status);
    out += "\r\n";
    if (!content_type.empty()) {
      out += "Content-Type: ";
      out += content_type;
      out += "\r\n";
    }
    for (const auto& f : extra) {
      out += f.name;
      out += ": ";
      out += f.value;
      out += "\r\n";
    }
    out += framing;
    if (!keep_alive) out += "Connection: close\r\n";
    else if (version_minor == 0) out += "Connection: keep-alive\r\n";
    out += "\r\n";
    return out;
  }

  static std::string build_whole(int status, std::string_view content_type, std::string_view body,
                                 const headers& extra, int version_minor, bool keep_alive) {
    std::string length = "Content-Length: ";
    append_number(length, body.size());
    length += "\r\n";
    std::string out = build_head(status, content_type, extra, version_minor, keep_alive, length, body.size());
    out += body;
    return out;
  }

 private:
  void start_read() {
    if (reading_ || read_closed_ || closed_) return;
    if (responding_ && parser_.buffered() > max_read_ahead_bytes) return;
    reading_ = true;
    socket_.async_read_some(asio::buffer(read_buffer_),
                            [self = shared_from_this()](std::error_code ec, std::size_t n) { self->on_read(ec, n); });
  }

  void on_read(std::error_code ec, std::size_t n) {
    reading_ = false;
    if (closed_) return;
    if (lingering_) {
      if (ec) close();
      else start_read();
      return;
    }
    if (ec) {
      read_closed_ = true;
      if (responding_) {
        close();  // the client left before its response was complete
      } else if (write_in_flight_ || !out_.empty()) {
        close_after_write_ = true;
      } else {
        close();
      }
      return;
    }
    parser_.feed(std::string_view(read_buffer_.data(), n));
    pump();
    if (!closed_) {
      start_read();
      arm_idle_timer();
    }
  }

  // Dispatches buffered requests one at a time, so responses go out in request order.
  void pump() {
    if (pumping_) return;
    pumping_ = true;
    while (!responding_ && !closed_ && !close_after_write_) {
      if (owner_.stopping()) {
        close_after_write_ = true;
        break;
      }
      request req;
      const auto st = parser_.parse(req);
      req.remote_address = remote_address_;
      if (st == parse_state::need_more) break;
      if (st == parse_state::failed) {
        const auto& failure = parser_.failure();
        close_after_write_ = true;
        auto bytes = build_whole(failure.status, "application/json",
                                 error_body(failure.message, "invalid_request_error"), {}, 1, false);
        unsent_ += bytes.size();
        queue(std::move(bytes));
        break;
      }
      dispatch(req);
    }
    pumping_ = false;
    if (!closed_) {
      if (!responding_ && close_after_write_ && out_.empty() && !write_in_flight_) finish_connection();
      else start_read();
    }
  }

  void dispatch(request& req) {
    responding_ = true;
    cancel_ = cancellation_source();
    auto state = std::make_shared<detail::response_state>();
    state->conn = weak_from_this();
    state->token = cancel_.token();
    state->version_minor = req.version_minor;
    state->keep_alive = req.keep_alive && !owner_.stopping();
    response res(state);
    std::string allow;
    const handler* fn = owner_.routes().find(req.method, req.path, allow);
    if (fn == nullptr) {
      if (allow.empty()) {
        res.send_error(404, "no route for " + req.path);
      } else {
        headers fields;
        fields.add("Allow", allow);
        res.send(405, "application/json",
                 error_body("method " + req.method + " not allowed for " + req.path, "invalid_request_error"), fields);
      }
      return;
    }
    try {
      (*fn)(req, res);
    } catch (const std::exception& e) {
      log::error("http: handler threw", {{"path", req.path}, {"what", e.what()}});
      if (!res.send_error(500, "internal error", "server_error") && state->current != detail::response_state::stage::done) {
        abort();  // mid-stream: closing tells the client the body is incomplete
      }
    }
  }

  void on_deliver(std::string bytes, bool last, bool keep_alive) {
    if (closed_) {
      unsent_ -= bytes.size();
      return;
    }
    queue(std::move(bytes));
    if (last) {
      responding_ = false;
      if (!keep_alive || owner_.stopping()) close_after_write_ = true;
      pump();
      arm_idle_timer();
    }
  }

  void queue(std::string bytes) {
    if (out_.empty()) out_.swap(bytes);
    else out_ += bytes;
    start_write();
  }

  void start_write() {
    if (write_in_flight_ || out_.empty()) return;
    writing_.swap(out_);
    out_.clear();
    write_in_flight_ = true;
    asio::async_write(socket_, asio::buffer(writing_),
                      [self = shared_from_this()](std::error_code ec, std::size_t) { self->on_write(ec); });
  }

  void on_write(std::error_code ec) {
    write_in_flight_ = false;
    unsent_ -= writing_.size();
    writing_.clear();
    if (writing_.capacity() > 64 * 1024) writing_.shrink_to_fit();
    wake_writers();
    if (closed_) return;
    if (ec) {
      close();
      return;
    }
    if (!out_.empty()) {
      start_write();
    } else if (close_after_write_ && !responding_) {
      finish_connection();
    }
  }

  // Half-closes after the last response and drains what the client still sends, so that it
  // reads the response instead of a reset caused by unread bytes.
  void finish_connection() {
    if (lingering_ || closed_) return;
    lingering_ = true;
    std::error_code ignored;
    socket_.shutdown(tcp::socket::shutdown_send, ignored);
    if (read_closed_ || owner_.stopping()) {
      close();
      return;
    }
    timer_.expires_after(linger_time);
    timer_.async_wait([self = shared_from_this()](std::error_code ec) {
      if (!ec) self->close();
    });
    start_read();
  }

  void arm_idle_timer() {
    if (closed_ || lingering_) return;
    if (responding_) {
      timer_.cancel();
      return;
    }
    timer_.expires_after(owner_.options().idle_timeout);
    timer_.async_wait([self = shared_from_this()](std::error_code ec) {
      if (ec || self->closed_ || self->lingering_ || self->responding_) return;
      if (self->timer_.expiry() > std::chrono::steady_clock::now()) return;
      self->close();
    });
  }

  void close() {
    if (closed_) return;
    closed_ = true;
    gone_.store(true);
    std::error_code ignored;
    timer_.cancel();
    socket_.shutdown(tcp::socket::shutdown_both, ignored);
    socket_.close(ignored);
    if (responding_) cancel_.cancel();
    wake_writers();
    owner_.forget(this);
  }

  void wake_writers() {
    { std::lock_guard lock(wait_mutex_); }
    wait_cv_.notify_all();
  }

  server::impl& owner_;
  tcp::socket socket_;
  asio::any_io_executor strand_;  // the socket's strand
  asio::steady_timer timer_;
  request_parser parser_;
  std::string remote_address_;  // the peer's address literal, set on start()
  std::array<char, 16 * 1024> read_buffer_;
  std::string out_;      // queued, not yet handed to the socket
  std::string writing_;  // being written
  cancellation_source cancel_;
  bool reading_ = false;
  bool read_closed_ = false;
  bool write_in_flight_ = false;
  bool responding_ = false;
  bool pumping_ = false;
  bool close_after_write_ = false;
  bool lingering_ = false;
  bool closed_ = false;

  std::atomic<std::size_t> unsent_{0};
  std::atomic<bool> gone_{false};
  std::mutex wait_mutex_;
  std::condition_variable wait_cv_;
};

detail::response_state::~response_state() {
  if (current == stage::done) return;
  if (auto c = conn.lock()) c->abandon(current == stage::streaming, version_minor);
}

// ---------------------------------------------------------------------------------------------
// response

// Each call changes the stage under the lock and hands its bytes over after releasing it: the
// hand-over may run connection code inline, and that may fire cancellation callbacks that call
// back into this response.
bool response::send(int status, std::string_view content_type, std::string_view body, const headers& extra) {
  auto& s = *state_;
  std::shared_ptr<connection> c;
  {
    std::lock_guard lock(s.mutex);
    if (s.current != detail::response_state::stage::idle || !valid_extra_headers(extra)) return false;
    s.current = detail::response_state::stage::done;
    c = s.conn.lock();
  }
  if (!c) return false;
  return c->deliver(connection::build_whole(status, content_type, body, extra, s.version_minor, s.keep_alive), true,
                    s.keep_alive);
}

bool response::send_error(int status, std::string_view message, std::string_view type) {
  return send(status, "application/json", error_body(message, type));
}

bool response::begin_stream(int status, std::string_view content_type, const headers& extra) {
  auto& s = *state_;
  std::shared_ptr<connection> c;
  {
    std::lock_guard lock(s.mutex);
    if (s.current != detail::response_state::stage::idle || !valid_extra_headers(extra)) return false;
    c = s.conn.lock();
    if (!c) {
      s.current = detail::response_state::stage::done;
      return false;
    }
    s.current = detail::response_state::stage::streaming;
    s.chunked = s.version_minor >= 1;
    if (!s.chunked) s.keep_alive = false;  // an HTTP/1.0 body without length ends with the connection
  }
  auto head = connection::build_head(status, content_type, extra, s.version_minor, s.keep_alive,
                                     s.chunked ? "Transfer-Encoding: chunked\r\n" : "", 0);
  return c->deliver(std::move(head), false, s.keep_alive);
}

bool response::write(std::string_view data) {
  auto& s = *state_;
  std::shared_ptr<connection> c;
  {
    std::lock_guard lock(s.mutex);
    if (s.current != detail::response_state::stage::streaming) return false;
    c = s.conn.lock();
  }
  if (!c) return false;
  if (data.empty()) return !c->gone();
  std::string piece;
  if (s.chunked) {
    piece.reserve(data.size() + 20);
    append_number(piece, data.size(), 16);
    piece += "\r\n";
    piece += data;
    piece += "\r\n";
  } else {
    piece.assign(data);
  }
  return c->deliver(std::move(piece), false, s.keep_alive);
}

bool response::finish() {
  auto& s = *state_;
  std::shared_ptr<connection> c;
  {
    std::lock_guard lock(s.mutex);
    if (s.current != detail::response_state::stage::streaming) return false;
    s.current = detail::response_state::stage::done;
    c = s.conn.lock();
  }
  if (!c) return false;
  // Without chunking the end of the connection ends the body (keep_alive is false then).
  return c->deliver(s.chunked ? "0\r\n\r\n" : "", true, s.keep_alive);
}

std::size_t response::buffered_bytes() const noexcept {
  auto c = state_->conn.lock();
  return c ? c->unsent() : 0;
}

bool response::wait_writable(std::chrono::milliseconds timeout) const {
  auto c = state_->conn.lock();
  return c && c->wait_writable(timeout);
}

const cancellation& response::cancelled() const noexcept { return state_->token; }

bool response::started() const {
  std::lock_guard lock(state_->mutex);
  return state_->current != detail::response_state::stage::idle;
}

// ---------------------------------------------------------------------------------------------
// sse_writer

bool sse_writer::begin(const headers& extra) {
  headers fields = extra;
  fields.set("Cache-Control", "no-cache");
  return response_.begin_stream(200, "text/event-stream", fields);
}

bool sse_writer::event(std::string_view data, std::string_view name) {
  std::string text;
  text.reserve(data.size() + name.size() + 16);
  if (!name.empty()) {
    text += "event: ";
    text += name;
    text += '\n';
  }
  while (true) {
    const auto newline = data.find('\n');
    text += "data: ";
    text += data.substr(0, newline);
    text += '\n';
    if (newline == std::string_view::npos) break;
    data.remove_prefix(newline + 1);
  }
  text += '\n';
  return response_.write(text);
}

bool sse_writer::comment(std::string_view text) {
  std::string line = ": ";
  line += text;
  line += "\n\n";
  return response_.write(line);
}

// ---------------------------------------------------------------------------------------------
// router

void router::add(std::string method, std::string path, handler fn) {
  routes_.push_back({std::move(method), std::move(path), false, std::move(fn)});
}

void router::add_prefix(std::string method, std::string prefix, handler fn) {
  routes_.push_back({std::move(method), std::move(prefix), true, std::move(fn)});
}

const handler* router::find(std::string_view method, std::string_view path, std::string& allow) const {
  allow.clear();
  // The best path match: exact before prefix, longer prefix before shorter.
  const route* best = nullptr;
  for (const auto& r : routes_) {
    const bool matches = r.prefix ? path.starts_with(r.path) : path == r.path;
    if (!matches) continue;
    if (best == nullptr || (!r.prefix && best->prefix) || (r.prefix && best->prefix && r.path.size() > best->path.size())) {
      best = &r;
    }
  }
  if (best == nullptr) return nullptr;
  for (const auto& r : routes_) {
    if (r.prefix != best->prefix || r.path != best->path) continue;
    if (r.method == method) return &r.fn;
    if (allow.find(r.method) == std::string::npos) {
      if (!allow.empty()) allow += ", ";
      allow += r.method;
    }
  }
  return nullptr;
}

// ---------------------------------------------------------------------------------------------
// server

status server::impl::listen() {
  std::error_code ec;
  const auto address = asio::ip::make_address(options_.host, ec);
  if (ec) return error(errc::invalid_argument, "http server: '" + options_.host + "' is not an IP address");
  const tcp::endpoint endpoint(address, options_.port);
  const auto where = "http server: " + options_.host + ":" + std::to_string(options_.port) + ": ";
  acceptor_.open(endpoint.protocol(), ec);
  if (!ec) acceptor_.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor_.bind(endpoint, ec);
  if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return error(errc::io_error, where + ec.message());
  port_ = acceptor_.local_endpoint(ec).port();
  if (ec) return error(errc::io_error, where + ec.message());
  return {};
}

void server::impl::run_threads() {
  accept();
  const int count = std::max(1, options_.io_threads);
  for (int i = 0; i < count; ++i) {
    threads_.emplace_back([this] {
      while (true) {
        try {
          io_.run();
          return;
        } catch (const std::exception& e) {
          log::error("http: I/O thread caught an exception", {{"what", e.what()}});
        }
      }
    });
  }
}

void server::impl::accept() {
  acceptor_.async_accept(asio::make_strand(io_), [this](std::error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted || stopping_.load()) return;
    if (!ec) {
      auto conn = std::make_shared<connection>(*this, std::move(socket));
      {
        std::lock_guard lock(mutex_);
        connections_.emplace(conn.get(), conn);
      }
      conn->start();
      accept();
      return;
    }
    // Out of descriptors or memory: retry shortly instead of spinning.
    log::warn("http: accept failed", {{"error", ec.message()}});
    accept_retry_.expires_after(std::chrono::milliseconds(100));
    accept_retry_.async_wait([this](std::error_code wait_ec) {
      if (!wait_ec && !stopping_.load()) accept();
    });
  });
}

void server::impl::forget(connection* conn) {
  std::shared_ptr<connection> last;  // released outside the lock
  {
    std::lock_guard lock(mutex_);
    auto it = connections_.find(conn);
    if (it == connections_.end()) return;
    last = std::move(it->second);
    connections_.erase(it);
  }
  all_closed_.notify_all();
}

void server::impl::stop(std::chrono::milliseconds grace) {
  if (stopped_) return;
  stopped_ = true;
  stopping_.store(true);
  asio::post(acceptor_.get_executor(), [this] {
    std::error_code ignored;
    acceptor_.close(ignored);
    accept_retry_.cancel();
  });

  const auto each_connection = [this](auto&& fn) {
    std::vector<std::shared_ptr<connection>> all;
    {
      std::lock_guard lock(mutex_);
      for (auto& [key, conn] : connections_) all.push_back(conn);
    }
    for (auto& conn : all) fn(*conn);
  };
  each_connection([](connection& c) { c.drain(); });
  {
    std::unique_lock lock(mutex_);
    all_closed_.wait_for(lock, grace, [&] { return connections_.empty(); });
  }
  each_connection([](connection& c) { c.abort(); });
  {
    // Closing takes one pass of each strand; a handler that blocks its I/O thread can delay
    // it, so this wait is bounded too.
    std::unique_lock lock(mutex_);
    all_closed_.wait_for(lock, std::chrono::seconds(5), [&] { return connections_.empty(); });
  }
  work_.reset();
  io_.stop();
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
  std::lock_guard lock(mutex_);
  connections_.clear();
}

server::server(std::unique_ptr<impl> p) : impl_(std::move(p)) {}

server::~server() { impl_->stop(std::chrono::milliseconds(0)); }

result<std::unique_ptr<server>> server::start(server_options options, router routes) {
  auto p = std::make_unique<impl>(std::move(options), std::move(routes));
  CHATAI_RETURN_IF_ERROR(p->listen());
  p->run_threads();
  return std::unique_ptr<server>(new server(std::move(p)));
}

std::uint16_t server::port() const noexcept { return impl_->port(); }

void server::stop(std::chrono::milliseconds grace) { impl_->stop(grace); }

}  // namespace chatai::http
