// The `session` command (gate protocol version 2): many requests multiplexed over one
// long-lived channel. Each request runs exactly as the `request` command does (run() on its
// own thread), over a socket pair whose other end this loop feeds from the request's frames
// and drains into the client's window; see chatai/proto/frames.hpp.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

#include "chatai/core/log.hpp"
#include "chatai/core/unique_fd.hpp"
#include "chatai/gate/gate.hpp"
#include "chatai/proto/frames.hpp"
#include "internal.hpp"
#include "worker_pool.hpp"

namespace chatai::gate::detail {

namespace {

using steady = std::chrono::steady_clock;

// Frames waiting for the client beyond this stop the reading of responses and of stdin.
constexpr std::size_t output_high_water = 1024 * 1024;
constexpr std::size_t read_chunk = proto::max_frame_payload;
// After goaway the client closes the session once its requests have ended; requests it opened
// before it read the goaway are still run. One that ignores goaway for this long gets 503s,
// and the session ends when nothing is in flight.
constexpr auto goaway_grace = std::chrono::seconds(10);

// Requests' threads report here when run() has returned.
struct completions {
  std::mutex mutex;
  std::vector<std::pair<std::uint32_t, int>> finished;  // request id, exit status
  unique_fd wake;                                        // an eventfd
  int running = 0;
};

struct session_request {
  unique_fd fd;           // the session's end of the request's socket pair
  std::string input;      // request bytes not yet taken by the socket
  std::int64_t input_total = 0;
  std::int64_t credit = 0;  // response bytes the client's window allows
  bool cancelled = false;
  bool eof = false;       // the request's end is closed and every byte was read
  bool done = false;      // run() returned
  int exit_code = exit_ok;
};

void set_nonblocking(int fd) {
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags >= 0) ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

class session {
 public:
  session(const gate_config& config, int in_fd, int out_fd)
      : config_(config), in_fd_(in_fd), out_fd_(out_fd), started_(steady::now()), last_activity_(started_) {}

  int run() {
    done_ = std::make_shared<completions>();
    done_->wake.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!done_->wake) return exit_incomplete;
    set_nonblocking(in_fd_);
    set_nonblocking(out_fd_);
    proto::hello h;
    h.max_requests = static_cast<std::uint32_t>(config_.session.max_requests);
    h.window = static_cast<std::uint32_t>(config_.session.window_bytes);
    proto::append_frame(out_, proto::frame_kind::hello, 0, proto::encode_hello(h));
    loop();
    workers_->stop();
    // Every request has to be over before the config it reads is gone.
    std::unique_lock lock(done_->mutex);
    while (done_->running > 0) {
      lock.unlock();
      pollfd p{done_->wake.get(), POLLIN, 0};
      ::poll(&p, 1, 100);
      lock.lock();
    }
    // Backend calls whose clients left may still hold markers: those are deleted as they end.
    markers_->close();
    return code_;
  }

 private:
  void loop() {
    for (;;) {
      collect_finished();
      end_requests();
      const auto now = steady::now();
      if (!goaway_sent_ && (now - started_ >= config_.session.max_lifetime ||
                            (requests_.empty() && now - last_activity_ >= config_.session.idle_timeout)))
        go_away();
      if (client_gone_ && requests_.empty()) return;
      if (goaway_sent_ && requests_.empty() && out_.empty() && now - goaway_at_ >= goaway_grace) return;

      std::vector<pollfd> fds;
      std::vector<std::uint32_t> ids;
      const bool room = out_.size() < output_high_water;
      fds.push_back({in_fd_, static_cast<short>(!client_gone_ && room ? POLLIN : 0), 0});
      fds.push_back({out_fd_, static_cast<short>(!client_gone_ && !out_.empty() ? POLLOUT : 0), 0});
      fds.push_back({done_->wake.get(), POLLIN, 0});
      for (auto& [id, r] : requests_) {
        short events = 0;
        if (!r.eof && (r.cancelled || (room && r.credit > 0))) events |= POLLIN;
        if (!r.input.empty()) events |= POLLOUT;
        if (!events) continue;
        fds.push_back({r.fd.get(), events, 0});
        ids.push_back(id);
      }
      const int n = ::poll(fds.data(), fds.size(), poll_timeout_ms());
      if (n < 0 && errno != EINTR) {
        code_ = exit_incomplete;
        return;
      }
      if (n <= 0) continue;
      if (fds[2].revents) {
        std::uint64_t count;
        (void)!::read(done_->wake.get(), &count, sizeof count);
      }
      for (std::size_t i = 0; i < ids.size(); ++i) {
        const short re = fds[3 + i].revents;
        if (!re) continue;
        const auto it = requests_.find(ids[i]);
        if (it == requests_.end()) continue;
        if (re & POLLOUT) feed_request(it->second);
        if (re & (POLLIN | POLLHUP | POLLERR)) read_response(ids[i], it->second);
      }
      if (fds[0].revents) read_client();
      if (fds[1].revents) write_client();
    }
  }

  int poll_timeout_ms() const {
    const auto now = steady::now();
    auto next = goaway_sent_ ? goaway_at_ + goaway_grace : started_ + config_.session.max_lifetime;
    if (requests_.empty() && !goaway_sent_) next = std::min(next, last_activity_ + config_.session.idle_timeout);
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(next - now).count() + 1;
    return static_cast<int>(std::clamp<long long>(ms, 0, 60000));
  }

  void go_away() {
    goaway_sent_ = true;
    goaway_at_ = steady::now();
    if (!client_gone_) proto::append_frame(out_, proto::frame_kind::goaway, 0);
  }

  // The client has left (end-of-file on stdin, or stdout broken): every request is cancelled.
  void lose_client() {
    client_gone_ = true;
    out_.clear();
    for (auto& [id, r] : requests_) cancel(r);
  }

  void cancel(session_request& r) {
    if (r.cancelled) return;
    r.cancelled = true;
    r.input.clear();
    // The request's thread reads end-of-file: its client has gone, as in version 1.
    ::shutdown(r.fd.get(), SHUT_WR);
  }

  void read_client() {
    char buf[read_chunk];
    const ssize_t n = ::read(in_fd_, buf, sizeof buf);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) return;
    if (n <= 0) {
      lose_client();
      return;
    }
    last_activity_ = steady::now();
    auto st = reader_.feed(std::string_view(buf, static_cast<std::size_t>(n)),
                           [this](const proto::frame_view& f) { return on_frame(f); });
    if (!st) {
      log::warn("session: the client broke the protocol; every request is cancelled", {{"error", st.err().message()}});
      code_ = exit_usage;
      lose_client();
    }
  }

  void write_client() {
    while (!out_.empty()) {
      const ssize_t n = ::write(out_fd_, out_.data(), out_.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EAGAIN) return;
      if (n <= 0) {
        lose_client();
        return;
      }
      out_.erase(0, static_cast<std::size_t>(n));
    }
  }

  status on_frame(const proto::frame_view& f) {
    using proto::frame_kind;
    if (f.kind == frame_kind::hello || f.kind == frame_kind::goaway || f.kind == frame_kind::end)
      return error(errc::parse_error, "a frame only the gate sends");
    if (f.kind == frame_kind::open) return open(f);
    // Frames of a request that has ended are late, not wrong; ids not yet opened are wrong.
    if (f.id > last_id_) return error(errc::parse_error, "a frame for request " + std::to_string(f.id) + ", never opened");
    const auto it = requests_.find(f.id);
    if (it == requests_.end()) return {};
    auto& r = it->second;
    switch (f.kind) {
      case frame_kind::data: add_input(r, f.payload); break;
      case frame_kind::window:
        r.credit = std::min<std::int64_t>(r.credit + proto::window_credit(f), std::int64_t{1} << 40);
        break;
      case frame_kind::cancel: cancel(r); break;
      default: break;
    }
    return {};
  }

  status open(const proto::frame_view& f) {
    if (f.id <= last_id_) return error(errc::parse_error, "request id " + std::to_string(f.id) + " used again");
    last_id_ = f.id;
    const bool closed = goaway_sent_ && steady::now() - goaway_at_ >= goaway_grace;
    if (closed || requests_.size() >= static_cast<std::size_t>(config_.session.max_requests)) {
      const std::string why = closed ? "this session takes no new requests; open another"
                                     : "too many requests on this session at once";
      proto::append_frames(out_, proto::frame_kind::data, f.id,
                           error_response(503, why, static_cast<int>(config_.retry_after.count()), "session_full"));
      proto::append_end(out_, f.id, exit_ok);
      return {};
    }
    // The state folder is checked as for every request of version 1, at most once a second.
    const auto now = steady::now();
    if (now - state_checked_ >= std::chrono::seconds(1)) {
      if (!state_dir_safe(config_)) {
        proto::append_end(out_, f.id, exit_usage);  // as the gate program: nothing written
        return {};
      }
      state_checked_ = now;
    }
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) {
      proto::append_frames(out_, proto::frame_kind::data, f.id, error_response(502, "the gate could not set up the request"));
      proto::append_end(out_, f.id, exit_ok);
      return {};
    }
    unique_fd ours(pair[0]);
    unique_fd theirs(pair[1]);
    set_nonblocking(ours.get());
    auto& r = requests_[f.id];
    r.fd = std::move(ours);
    r.credit = config_.session.window_bytes;
    {
      std::lock_guard lock(done_->mutex);
      ++done_->running;
    }
    try {
      auto fd = std::make_shared<unique_fd>(std::move(theirs));
      worker_pool::run(workers_, [config = &config_, fd, id = f.id, done = done_, markers = markers_] {
        const int code = run_request(*config, fd->get(), fd->get(), markers);
        fd->reset();
        std::lock_guard lock(done->mutex);
        done->finished.emplace_back(id, code);
        --done->running;
        const std::uint64_t one = 1;
        (void)!::write(done->wake.get(), &one, sizeof one);
      });
    } catch (const std::system_error& e) {
      {
        std::lock_guard lock(done_->mutex);
        --done_->running;
      }
      requests_.erase(f.id);
      log::warn("session: no thread for a request", {{"error", e.what()}});
      proto::append_frames(out_, proto::frame_kind::data, f.id,
                           error_response(503, "the gate is out of threads; retry later",
                                          static_cast<int>(config_.retry_after.count()), "session_full"));
      proto::append_end(out_, f.id, exit_ok);
      return {};
    }
    if (++opened_ >= config_.session.max_session_requests) go_away();
    add_input(r, f.payload);
    return {};
  }

  void add_input(session_request& r, std::string_view bytes) {
    if (r.cancelled) return;
    // More than a request can hold: the thread has refused it already or will (413 or 400).
    const std::int64_t limit = config_.max_header_bytes + config_.max_body_bytes + 1;
    if (r.input_total + static_cast<std::int64_t>(bytes.size()) > limit) {
      ::shutdown(r.fd.get(), SHUT_WR);
      r.input.clear();
      r.input_total = limit + 1;
      return;
    }
    r.input_total += static_cast<std::int64_t>(bytes.size());
    r.input.append(bytes);
    feed_request(r);
  }

  static void feed_request(session_request& r) {
    while (!r.input.empty()) {
      const ssize_t n = ::send(r.fd.get(), r.input.data(), r.input.size(), MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EAGAIN) return;
      if (n <= 0) {
        r.input.clear();  // the request's thread has closed its end: it answered already
        return;
      }
      r.input.erase(0, static_cast<std::size_t>(n));
    }
  }

  void read_response(std::uint32_t id, session_request& r) {
    char buf[read_chunk];
    while (!r.eof) {
      const std::size_t want = r.cancelled ? sizeof buf : static_cast<std::size_t>(std::min<std::int64_t>(r.credit, sizeof buf));
      if (want == 0 || (!r.cancelled && out_.size() >= output_high_water)) return;
      const ssize_t n = ::recv(r.fd.get(), buf, want, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EAGAIN) return;
      if (n <= 0) {
        r.eof = true;
        return;
      }
      if (r.cancelled || client_gone_) continue;  // nobody wants these bytes any more
      r.credit -= n;
      proto::append_frames(out_, proto::frame_kind::data, id, std::string_view(buf, static_cast<std::size_t>(n)));
    }
  }

  void collect_finished() {
    std::vector<std::pair<std::uint32_t, int>> finished;
    {
      std::lock_guard lock(done_->mutex);
      finished.swap(done_->finished);
    }
    for (const auto& [id, code] : finished) {
      const auto it = requests_.find(id);
      if (it == requests_.end()) continue;
      it->second.done = true;
      it->second.exit_code = code;
      // What the thread wrote before it returned is in the socket: read it now, so that the
      // end below waits only for the window, not for another wake-up.
      read_response(id, it->second);
    }
  }

  // A request ends when its thread has returned and its bytes went out (or nobody wants them).
  void end_requests() {
    for (auto it = requests_.begin(); it != requests_.end();) {
      auto& r = it->second;
      bool over = false;
      if (r.done) {
        if (r.cancelled || client_gone_ || r.eof) over = true;
        else if (r.credit > 0 && out_.size() < output_high_water) {
          // Nothing left to read now: a detached backend call may still hold the socket, but
          // the request is over for run(), as for the gate program when it exits.
          read_response(it->first, r);
          char probe;
          const ssize_t n = ::recv(r.fd.get(), &probe, 1, MSG_PEEK);
          over = r.eof || (n < 0 && errno == EAGAIN);
        }
      }
      if (!over) {
        ++it;
        continue;
      }
      if (!client_gone_) proto::append_end(out_, it->first, r.exit_code);
      last_activity_ = steady::now();
      it = requests_.erase(it);
    }
  }

  const gate_config& config_;
  const int in_fd_;
  const int out_fd_;
  const steady::time_point started_;
  steady::time_point last_activity_;
  std::shared_ptr<completions> done_;
  std::shared_ptr<worker_pool> workers_ = std::make_shared<worker_pool>();
  // The requests' in-flight marker files, reused from one request to the next.
  std::shared_ptr<slurm::marker_pool> markers_ = std::make_shared<slurm::marker_pool>();
  proto::frame_reader reader_;
  std::string out_;  // frames for the client
  std::map<std::uint32_t, session_request> requests_;
  std::uint32_t last_id_ = 0;
  std::int64_t opened_ = 0;
  steady::time_point state_checked_{};  // when the state folder was last found safe
  bool goaway_sent_ = false;
  steady::time_point goaway_at_{};
  bool client_gone_ = false;
  int code_ = exit_ok;
};

}  // namespace

int handle_session(const gate_config& config, int in_fd, int out_fd) {
  // A client gone makes writes fail with EPIPE here instead of raising SIGPIPE (see write_all).
  sigset_t pipe_only, previous;
  sigemptyset(&pipe_only);
  sigaddset(&pipe_only, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_only, &previous);
  const int code = session(config, in_fd, out_fd).run();
  if (!sigismember(&previous, SIGPIPE)) {
    const timespec zero{0, 0};
    while (sigtimedwait(&pipe_only, nullptr, &zero) >= 0 || errno == EINTR) {
    }
  }
  pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  return code;
}

}  // namespace chatai::gate::detail
