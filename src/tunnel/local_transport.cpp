// The local transport: chatai-gate as a child process per request, its pipes polled by one
// I/O thread.
#include "chatai/tunnel/local_transport.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <deque>
#include <list>
#include <mutex>
#include <thread>
#include <vector>

#include "chatai/core/log.hpp"
#include "stream_state.hpp"

extern char** environ;

namespace chatai::tunnel {

using detail::clock;
using detail::stream_state;

namespace {

constexpr auto kill_grace = std::chrono::seconds(1);

struct child {
  pid_t pid = -1;
  unique_fd in, out, err;
  std::shared_ptr<stream_state> req;
  clock::time_point kill_at = clock::time_point::max();
  bool out_eof = false;
  bool err_eof = false;
};

result<child> spawn_gate(const local_options& o, verb v) {
  int in[2], out[2], err[2];
  if (::pipe2(in, O_CLOEXEC) != 0) return error(errc::io_error, std::string("pipe: ") + std::strerror(errno));
  unique_fd in_r(in[0]), in_w(in[1]);
  if (::pipe2(out, O_CLOEXEC) != 0) return error(errc::io_error, std::string("pipe: ") + std::strerror(errno));
  unique_fd out_r(out[0]), out_w(out[1]);
  if (::pipe2(err, O_CLOEXEC) != 0) return error(errc::io_error, std::string("pipe: ") + std::strerror(errno));
  unique_fd err_r(err[0]), err_w(err[1]);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, in_r.get(), 0);
  posix_spawn_file_actions_adddup2(&actions, out_w.get(), 1);
  posix_spawn_file_actions_adddup2(&actions, err_w.get(), 2);
  // The gate gets its three pipes and nothing else of the gateway (its listening socket,
  // client connections, the key database).
  posix_spawn_file_actions_addclosefrom_np(&actions, 3);

  std::vector<std::string> env_strings;
  for (char** e = environ; *e; ++e)
    if (std::strncmp(*e, "SSH_ORIGINAL_COMMAND=", 21) != 0) env_strings.emplace_back(*e);
  env_strings.push_back("SSH_ORIGINAL_COMMAND=" + std::string(proto::command_name(v)));
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::string program = o.gate_program, flag = "--config", config = o.gate_config;
  char* argv[] = {program.data(), flag.data(), config.data(), nullptr};

  pid_t pid = -1;
  const int rc = ::posix_spawn(&pid, program.c_str(), &actions, nullptr, argv, envp.data());
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return error(errc::unavailable, "cannot run " + o.gate_program + ": " + std::strerror(rc));
  for (int fd : {in_w.get(), out_r.get(), err_r.get()}) ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  child c;
  c.pid = pid;
  c.in = std::move(in_w);
  c.out = std::move(out_r);
  c.err = std::move(err_r);
  return c;
}

}  // namespace

struct local_transport::impl {
  local_options opts;
  std::shared_ptr<detail::waker> wake;
  std::thread io;

  mutable std::mutex mutex;
  bool stopping = false;
  std::deque<std::shared_ptr<stream_state>> submitted;
  transport_health health;

  std::deque<std::shared_ptr<stream_state>> pending;
  std::list<child> children;  // running, or ended and waiting to be reaped
  clock::time_point next_keep_alive{};
  std::shared_ptr<stream_state> keep_alive_req;

  // Ends the child's side of the conversation: the gate sees its client leave.
  static void hang_up(child& c) {
    c.in.reset();
    c.out.reset();
    c.err.reset();
    c.out_eof = c.err_eof = true;
    c.kill_at = std::min(c.kill_at, clock::now() + kill_grace);
  }

  void start_children() {
    int running = 0;
    for (auto& c : children)
      if (c.req) ++running;
    while (!pending.empty() && running < opts.max_running) {
      auto req = std::move(pending.front());
      pending.pop_front();
      if (req->ended()) continue;
      auto c = spawn_gate(opts, req->verb_);
      if (!c) {
        req->finish(c.err());
        continue;
      }
      c->req = std::move(req);
      children.push_back(std::move(*c));
      ++running;
    }
  }

  void pump(child& c, const pollfd* in_fd, const pollfd* out_fd, const pollfd* err_fd) {
    auto& req = *c.req;
    if (in_fd && (in_fd->revents & (POLLOUT | POLLERR | POLLHUP)) && c.in) {
      while (req.written_ < req.input_.size()) {
        const auto n = ::write(c.in.get(), req.input_.data() + req.written_, req.input_.size() - req.written_);
        if (n <= 0) break;
        req.written_ += static_cast<std::size_t>(n);
      }
    }
    if (req.verb_ != verb::request && req.written_ == req.input_.size() && c.in) c.in.reset();
    char buf[65536];
    if (err_fd && (err_fd->revents & (POLLIN | POLLHUP | POLLERR))) {
      const auto n = ::read(c.err.get(), buf, sizeof buf);
      if (n > 0 && req.stderr_.size() < detail::max_stderr)
        req.stderr_.append(buf, std::min<std::size_t>(static_cast<std::size_t>(n), detail::max_stderr - req.stderr_.size()));
      if (n == 0) c.err_eof = true;
    }
    if (out_fd && (out_fd->revents & (POLLIN | POLLHUP | POLLERR))) {
      const auto n = ::read(c.out.get(), buf, sizeof buf);
      if (n > 0) req.deliver(std::string_view(buf, static_cast<std::size_t>(n)));
      if (n == 0) c.out_eof = true;
    }
  }

  void reap(clock::time_point now) {
    for (auto it = children.begin(); it != children.end();) {
      auto& c = *it;
      if (c.req && !c.req->ended()) {
        if (c.req->cancel_requested()) {
          c.req->finish(error(errc::cancelled, "the request was cancelled"));
          hang_up(c);
        } else if (c.req->expired(now)) {
          c.req->finish(c.req->timeout_error());
          hang_up(c);
        }
      }
      const bool drained = c.out_eof && c.err_eof;
      if (!drained && now < c.kill_at) {
        ++it;
        continue;
      }
      int wstatus = 0;
      const pid_t r = ::waitpid(c.pid, &wstatus, WNOHANG);
      if (r == 0) {
        if (now >= c.kill_at) ::kill(c.pid, SIGKILL);
        ++it;
        continue;
      }
      if (c.req && !c.req->ended()) {
        const int code = r < 0 ? 255 : WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : 255;
        c.req->finish(detail::gate_outcome(c.req->verb_, code, c.req->stderr_));
      }
      it = children.erase(it);
    }
  }

  void run_keep_alive(clock::time_point now) {
    if (opts.keep_alive_interval.count() == 0 || now < next_keep_alive) return;
    if (keep_alive_req && !keep_alive_req->ended()) return;
    next_keep_alive = now + opts.keep_alive_interval;
    keep_alive_req = make_keep_alive_request(opts.keep_alive_timeout, mutex, health, wake);
    pending.push_front(keep_alive_req);
  }

  void loop() {
    std::vector<pollfd> fds;
    std::vector<std::array<int, 3>> slots;  // per child: indexes into fds, -1 when not polled
    for (;;) {
      std::deque<std::shared_ptr<stream_state>> in;
      {
        std::lock_guard lock(mutex);
        if (stopping) break;
        in.swap(submitted);
      }
      for (auto& r : in) {
        if (pending.size() >= static_cast<std::size_t>(opts.max_queued))
          r->finish(error(errc::resource_exhausted, "the tunnel's queue is full"));
        else
          pending.push_back(std::move(r));
      }
      auto now = clock::now();
      run_keep_alive(now);
      for (auto it = pending.begin(); it != pending.end();) {
        if ((*it)->cancel_requested()) (*it)->finish(error(errc::cancelled, "the request was cancelled"));
        else if ((*it)->expired(now)) (*it)->finish((*it)->timeout_error());
        it = (*it)->ended() ? pending.erase(it) : it + 1;
      }
      start_children();
      reap(now);

      fds.clear();
      slots.clear();
      fds.push_back({wake->fd(), POLLIN, 0});
      auto next = now + std::chrono::milliseconds(500);
      for (auto& c : children) {
        std::array<int, 3> s{-1, -1, -1};
        const bool live = c.req && !c.req->ended();
        if (live && c.in && c.req->written_ < c.req->input_.size()) {
          s[0] = static_cast<int>(fds.size());
          fds.push_back({c.in.get(), POLLOUT, 0});
        }
        if (c.out && !c.out_eof && (!live || c.req->may_read())) {
          s[1] = static_cast<int>(fds.size());
          fds.push_back({c.out.get(), POLLIN, 0});
        }
        if (c.err && !c.err_eof) {
          s[2] = static_cast<int>(fds.size());
          fds.push_back({c.err.get(), POLLIN, 0});
        }
        slots.push_back(s);
        if (live) next = std::min(next, c.req->deadline());
        if (c.kill_at != clock::time_point::max() || (c.out_eof && c.err_eof))
          next = std::min(next, now + std::chrono::milliseconds(20));
      }
      for (auto& r : pending) next = std::min(next, r->deadline());
      if (opts.keep_alive_interval.count() > 0) next = std::min(next, next_keep_alive);
      const auto ms = std::clamp<long long>(
          std::chrono::duration_cast<std::chrono::milliseconds>(next - now).count() + 1, 0, 500);
      ::poll(fds.data(), fds.size(), static_cast<int>(ms));
      if (fds[0].revents) wake->drain();
      std::size_t i = 0;
      for (auto& c : children) {
        const auto& s = slots[i++];
        if (!c.req) continue;
        if (c.req->ended()) {
          // The answer ended early (a timeout): drain what is left so the gate can exit.
          if (s[1] >= 0 && (fds[static_cast<std::size_t>(s[1])].revents & (POLLIN | POLLHUP | POLLERR))) {
            char buf[65536];
            if (::read(c.out.get(), buf, sizeof buf) == 0) c.out_eof = true;
          }
          continue;
        }
        pump(c, s[0] >= 0 ? &fds[static_cast<std::size_t>(s[0])] : nullptr,
             s[1] >= 0 ? &fds[static_cast<std::size_t>(s[1])] : nullptr,
             s[2] >= 0 ? &fds[static_cast<std::size_t>(s[2])] : nullptr);
      }
      int running = 0;
      for (auto& c : children)
        if (c.req && !c.req->ended()) ++running;
      std::lock_guard lock(mutex);
      health.requests_running = running;
      health.requests_queued = static_cast<int>(pending.size() + submitted.size());
    }
    const error gone(errc::cancelled, "the tunnel was closed");
    {
      // Requests submitted since the last round end too: every request's on_end runs once.
      std::lock_guard lock(mutex);
      for (auto& r : submitted) pending.push_back(std::move(r));
      submitted.clear();
    }
    for (auto& r : pending) r->finish(gone);
    for (auto& c : children) {
      if (c.req) c.req->finish(gone);
      hang_up(c);
      ::kill(c.pid, SIGKILL);
      ::waitpid(c.pid, nullptr, 0);
    }
    children.clear();
  }
};

result<std::unique_ptr<local_transport>> local_transport::create(local_options options) {
  if (options.gate_program.empty() || options.gate_config.empty())
    return error(errc::invalid_argument, "local_transport: gate_program and gate_config are required");
  if (::access(options.gate_program.c_str(), X_OK) != 0)
    return error(errc::not_found, "local_transport: " + options.gate_program + " is not an executable");
  if (options.max_running < 1 || options.max_queued < 1)
    return error(errc::invalid_argument, "local_transport: max_running and max_queued must be >= 1");
  auto wake = detail::waker::create();
  if (!wake) return std::move(wake).err();
  auto p = std::make_unique<impl>();
  p->opts = std::move(options);
  p->wake = std::move(*wake);
  p->health.sessions_up = 1;
  p->next_keep_alive = clock::now() + p->opts.keep_alive_interval;
  auto* raw = p.get();
  p->io = detail::start_io_thread("tunnel: local I/O thread failed", [raw] { raw->loop(); });
  return std::unique_ptr<local_transport>(new local_transport(std::move(p)));
}

local_transport::local_transport(std::unique_ptr<impl> p) : impl_(std::move(p)) {}

local_transport::~local_transport() {
  {
    std::lock_guard lock(impl_->mutex);
    impl_->stopping = true;
  }
  impl_->wake->wake();
  if (impl_->io.joinable()) impl_->io.join();
}

std::shared_ptr<stream> local_transport::start(verb v, std::string input, stream_callbacks callbacks,
                                               request_options options) {
  auto req = std::make_shared<stream_state>(v, std::move(input), std::move(callbacks), std::move(options), impl_->wake);
  req->watch_cancellation();
  {
    std::lock_guard lock(impl_->mutex);
    impl_->submitted.push_back(req);
  }
  impl_->wake->wake();
  return req;
}

transport_health local_transport::health() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->health;
}

}  // namespace chatai::tunnel
