// run_subprocess: posix_spawnp with pipes, poll() for I/O and the deadline.
#include "chatai/core/subprocess.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <pthread.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

extern char** environ;

namespace chatai {

namespace {
struct fd_guard {
  int fd = -1;
  ~fd_guard() { reset(); }
  void reset() {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
};

bool make_pipe(fd_guard& read_end, fd_guard& write_end) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return false;
  read_end.fd = fds[0];
  write_end.fd = fds[1];
  return true;
}

std::vector<std::string> child_environment(const std::map<std::string, std::string>& overrides, bool inherit) {
  std::vector<std::string> env;
  for (char** e = inherit ? environ : nullptr; e && *e; ++e) {
    const std::string entry(*e);
    const auto eq = entry.find('=');
    if (eq != std::string::npos && overrides.count(entry.substr(0, eq))) continue;
    env.push_back(entry);
  }
  for (const auto& [k, v] : overrides) env.push_back(k + "=" + v);
  return env;
}
}  // namespace

result<subprocess_result> run_subprocess(const subprocess_options& options) {
  if (options.argv.empty()) return error(errc::invalid_argument, "run_subprocess: empty argv");
  fd_guard in_r, in_w, out_r, out_w, err_r, err_w;
  if (!make_pipe(in_r, in_w) || !make_pipe(out_r, out_w) || !make_pipe(err_r, err_w))
    return error(errc::io_error, std::string("pipe: ") + std::strerror(errno));

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, in_r.fd, STDIN_FILENO);
  posix_spawn_file_actions_adddup2(&actions, out_w.fd, STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, err_w.fd, STDERR_FILENO);
  // Nothing of this process but the three pipes: not a listening socket, a lock or a key file
  // opened without O_CLOEXEC (by this code or a library's).
  posix_spawn_file_actions_addclosefrom_np(&actions, 3);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  // The child starts with default signal dispositions and an empty mask.
  sigset_t all, none;
  sigfillset(&all);
  sigemptyset(&none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);

  std::vector<char*> argv;
  for (const auto& a : options.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const auto env_strings = child_environment(options.env_set, options.inherit_environment);
  std::vector<char*> envp;
  for (const auto& e : env_strings) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);

  pid_t pid = -1;
  const int rc = posix_spawnp(&pid, argv[0], &actions, &attr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    return error(rc == ENOENT ? errc::not_found : errc::io_error,
                 "cannot run " + options.argv[0] + ": " + std::strerror(rc));
  }
  in_r.reset();
  out_w.reset();
  err_w.reset();
  ::fcntl(in_w.fd, F_SETFL, O_NONBLOCK);
  // Writing to a child that exited must give EPIPE, not kill this process.
  sigset_t pipe_set, old_mask;
  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_set, &old_mask);
  const bool pipe_was_blocked = sigismember(&old_mask, SIGPIPE);

  subprocess_result res;
  const auto deadline = std::chrono::steady_clock::now() + options.timeout;
  std::size_t written = 0;
  if (options.stdin_data.empty()) in_w.reset();
  char buffer[65536];
  while (out_r.fd >= 0 || err_r.fd >= 0) {
    pollfd fds[3];
    nfds_t n = 0;
    if (out_r.fd >= 0) fds[n++] = {out_r.fd, POLLIN, 0};
    if (err_r.fd >= 0) fds[n++] = {err_r.fd, POLLIN, 0};
    if (in_w.fd >= 0) fds[n++] = {in_w.fd, POLLOUT, 0};
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      res.timed_out = true;
      ::kill(pid, SIGKILL);
      break;
    }
    const int ready = ::poll(fds, n, static_cast<int>(std::min<long long>(left.count(), 1000)));
    if (ready < 0 && errno != EINTR) break;
    for (nfds_t i = 0; i < n && ready > 0; ++i) {
      if (fds[i].revents == 0) continue;
      if (fds[i].fd == in_w.fd) {
        const ssize_t w = ::write(in_w.fd, options.stdin_data.data() + written, options.stdin_data.size() - written);
        if (w > 0) written += static_cast<std::size_t>(w);
        if (w < 0 && errno != EAGAIN) in_w.reset();
        if (written == options.stdin_data.size()) in_w.reset();
        continue;
      }
      fd_guard& src = fds[i].fd == out_r.fd ? out_r : err_r;
      std::string& dst = fds[i].fd == out_r.fd ? res.out : res.err;
      const ssize_t r = ::read(src.fd, buffer, sizeof buffer);
      if (r > 0) {
        const std::size_t keep = std::min<std::size_t>(static_cast<std::size_t>(r), options.max_output - std::min(options.max_output, dst.size()));
        dst.append(buffer, keep);
      } else if (r == 0 || errno != EINTR) {
        src.reset();
      }
    }
  }
  in_w.reset();
  // A child may close its pipes and keep running: the deadline still holds.
  int wstatus = 0;
  for (;;) {
    const pid_t w = ::waitpid(pid, &wstatus, res.timed_out ? 0 : WNOHANG);
    if (w == pid || (w < 0 && errno != EINTR)) break;
    if (w == 0 && std::chrono::steady_clock::now() >= deadline) {
      res.timed_out = true;
      ::kill(pid, SIGKILL);
      continue;
    }
    if (w == 0) ::usleep(2000);
  }
  // Drop a SIGPIPE raised by writing to a child that had exited, then restore the mask.
  sigset_t pending;
  sigpending(&pending);
  if (sigismember(&pending, SIGPIPE) && !pipe_was_blocked) {
    const timespec zero{0, 0};
    sigtimedwait(&pipe_set, nullptr, &zero);
  }
  pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  if (WIFEXITED(wstatus)) res.exit_code = WEXITSTATUS(wstatus);
  if (WIFSIGNALED(wstatus)) res.signal = WTERMSIG(wstatus);
  return res;
}

}  // namespace chatai
