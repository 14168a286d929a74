// The gate's verbs: dispatch, keep-alive with its rate-limited tick, status, error responses.
#include "chatai/gate/gate.hpp"

#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <map>
#include <vector>

#include "chatai/core/http_parser.hpp"
#include "chatai/core/json.hpp"
#include "chatai/core/log.hpp"
#include "chatai/core/subprocess.hpp"
#include "chatai/core/unique_fd.hpp"
#include "chatai/gate/breaker.hpp"
#include "internal.hpp"

namespace chatai::gate {

namespace detail {

thread_local bool sigpipe_blocked_here = false;

bool write_all(int fd, std::string_view data) noexcept {
  if (sigpipe_blocked_here) {
    while (!data.empty()) {
      const ssize_t n = ::write(fd, data.data(), data.size());
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      data.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
  }
  sigset_t pipe_only, previous;
  sigemptyset(&pipe_only);
  sigaddset(&pipe_only, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_only, &previous);
  bool ok = true;
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (errno == EPIPE && !sigismember(&previous, SIGPIPE)) {
        const timespec zero{0, 0};
        while (sigtimedwait(&pipe_only, nullptr, &zero) < 0 && errno == EINTR) {
        }
      }
      ok = false;
      break;
    }
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  return ok;
}

}  // namespace detail

namespace {

// Runs the tick command when tick.interval has passed since the last one, never two at once.
void keep_alive_tick(const gate_config& config) {
  if (config.tick.command.empty()) return;
  const slurm::state_dir dir(config.state_dir);
  if (!slurm::ensure_dir(dir.root())) return;
  const std::string path = dir.tick_stamp_file().string();
  unique_fd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd || ::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) return;  // another tick is running
  char buffer[32] = {};
  const ssize_t n = ::pread(fd.get(), buffer, sizeof buffer - 1, 0);
  const std::int64_t last = n > 0 ? std::strtoll(buffer, nullptr, 10) : 0;
  const std::int64_t now = unix_ms_now();
  if (now - last < std::chrono::duration_cast<std::chrono::milliseconds>(config.tick.interval).count()) return;
  const std::string stamp = std::to_string(now) + "\n";
  if (::ftruncate(fd.get(), 0) != 0 || ::pwrite(fd.get(), stamp.data(), stamp.size(), 0) < 0) return;
  subprocess_options options;
  options.argv = config.tick.command;
  options.timeout = config.tick.timeout;
  options.env_set = tick_environment();
  options.inherit_environment = false;
  auto ran = run_subprocess(options);
  if (!ran) log::warn("scheduler tick could not start", {{"error", ran.err().message()}});
  else if (ran->exit_code != 0)
    log::warn("scheduler tick failed", {{"exit_code", std::to_string(ran->exit_code)},
                                        {"timed_out", ran->timed_out ? "true" : "false"}});
}

}  // namespace

std::map<std::string, std::string> tick_environment() {
  std::map<std::string, std::string> env = {{"PATH", "/usr/local/bin:/usr/bin:/bin"}, {"LANG", "C.UTF-8"}};
  const long suggested = ::sysconf(_SC_GETPW_R_SIZE_MAX);
  std::vector<char> buffer(suggested > 0 ? static_cast<std::size_t>(suggested) : 16384);
  passwd entry{};
  passwd* found = nullptr;
  // getpwuid_r, not getpwuid: run() may be called from several threads at once.
  if (::getpwuid_r(::geteuid(), &entry, buffer.data(), buffer.size(), &found) == 0 && found) {
    env["HOME"] = found->pw_dir;
    env["USER"] = found->pw_name;
    env["LOGNAME"] = found->pw_name;
  }
  return env;
}

std::string error_response(int http_status, std::string_view message, int retry_after_s, std::string_view code) {
  std::string type = "invalid_request_error";
  std::string usual_code = "bad_request";
  switch (http_status) {
    case 404: usual_code = "model_not_found"; break;
    case 408: usual_code = "request_timeout"; break;
    case 413: usual_code = "request_too_large"; break;
    case 502: type = "server_error"; usual_code = "backend_failed"; break;
    case 503: type = "server_error"; usual_code = "no_backend_ready"; break;
    default: break;
  }
  std::string body = "{\"error\":{\"message\":";
  json::append_quoted(body, message);
  body += ",\"type\":\"" + type + "\",\"param\":null,\"code\":";
  json::append_quoted(body, code.empty() ? std::string_view(usual_code) : code);
  body += "}}";
  std::string out = "HTTP/1.1 " + std::to_string(http_status) + " " + std::string(http::reason_phrase(http_status)) +
                    "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
  if (retry_after_s > 0) out += "Retry-After: " + std::to_string(retry_after_s) + "\r\n";
  out += "Connection: close\r\n\r\n";
  out += body;
  return out;
}

result<std::string> status_json(const gate_config& config) {
  const slurm::state_dir dir(config.state_dir);
  slurm::registry reg;
  if (auto read = slurm::read_registry(dir)) reg = std::move(*read);
  else if (read.err().code() != errc::not_found) return std::move(read).err();
  auto counts = slurm::count_inflight(dir);
  if (!counts) return std::move(counts).err();
  proto::status_document doc;
  doc.generation = reg.generation;
  for (const auto& s : reg.services) {
    proto::service_status out;
    out.id = s.id;
    out.models = s.models;
    out.can_scale_from_zero = s.can_scale_from_zero;
    out.pending = s.pending;
    for (const auto& b : reg.backends) {
      if (b.service != s.id) continue;
      switch (b.state) {
        case slurm::backend_state::ready: ++out.ready; break;
        case slurm::backend_state::starting: ++out.starting; break;
        case slurm::backend_state::draining: ++out.draining; break;
      }
      auto rec = breaker(dir, b.job, config.breaker).read();
      if (rec && rec->state != breaker_state::closed) ++out.open_breakers;
    }
    const auto demand = counts->by_service.find(s.id);
    out.in_flight = demand == counts->by_service.end() ? 0 : demand->second;
    doc.services.push_back(std::move(out));
  }
  return proto::encode_status(doc);
}

result<const slurm::backend_entry*> pick_backend(const gate_config& config, const slurm::registry& reg,
                                                 std::string_view service, const slurm::inflight_counts& counts,
                                                 const std::vector<std::string>& tried, std::string_view affinity) {
  struct candidate {
    std::int64_t load;
    std::uint64_t rank;  // higher first among equal loads
    const slurm::backend_entry* backend;
  };
  // The rank of a job for the key: FNV-1a over both, finished with a multiply-xorshift.
  const auto rank_of = [&](std::string_view job) {
    if (affinity.empty()) return std::uint64_t{0};
    std::uint64_t h = 0xcbf29ce484222325ull;
    for (const std::string_view part : {affinity, std::string_view("\n"), job}) {
      for (const char c : part) h = (h ^ static_cast<unsigned char>(c)) * 0x100000001b3ull;
    }
    h = (h ^ (h >> 29)) * 0xbf58476d1ce4e5b9ull;
    return h ^ (h >> 32);
  };
  std::vector<candidate> candidates;
  for (const auto& b : reg.backends) {
    if (b.service != service || b.state != slurm::backend_state::ready) continue;
    if (std::find(tried.begin(), tried.end(), b.job) != tried.end()) continue;
    const auto n = counts.by_job.find(b.job);
    candidates.push_back({n == counts.by_job.end() ? 0 : n->second, rank_of(b.job), &b});
  }
  std::stable_sort(candidates.begin(), candidates.end(), [](const candidate& a, const candidate& b) {
    return a.load != b.load ? a.load < b.load : a.rank > b.rank;
  });
  const slurm::state_dir dir(config.state_dir);
  const std::int64_t now = unix_ms_now();
  for (const auto& [load, rank, b] : candidates) {
    auto allowed = breaker(dir, b->job, config.breaker).try_acquire(now);
    if (!allowed) return std::move(allowed).err();
    if (*allowed) return b;
  }
  return static_cast<const slurm::backend_entry*>(nullptr);
}

namespace detail {

bool state_dir_safe(const gate_config& config) {
  if (auto safe = slurm::check_state_dir(slurm::state_dir(config.state_dir)); !safe) {
    log::error("the state folder is not safe to use; nothing done", {{"error", safe.err().message()}});
    return false;
  }
  return true;
}

int run_request(const gate_config& config, int in_fd, int out_fd,
                const std::shared_ptr<slurm::marker_pool>& markers) noexcept {
  try {
    return handle_request(config, in_fd, out_fd, markers);
  } catch (const std::exception& e) {
    log::error("gate failed", {{"error", e.what()}});
  }
  return exit_incomplete;
}

}  // namespace detail

int run(const gate_config& config, verb v, int in_fd, int out_fd) {
  try {
    if (!detail::state_dir_safe(config)) return exit_usage;
    switch (v) {
      case verb::keep_alive: {
        const bool written = detail::write_all(out_fd, "OK\n");
        keep_alive_tick(config);
        return written ? exit_ok : exit_incomplete;
      }
      case verb::status: {
        auto doc = status_json(config);
        if (!doc) {
          log::error("status failed", {{"error", doc.err().message()}});
          return exit_incomplete;
        }
        return detail::write_all(out_fd, *doc + "\n") ? exit_ok : exit_incomplete;
      }
      case verb::request: return detail::run_request(config, in_fd, out_fd);
      case verb::session: return detail::handle_session(config, in_fd, out_fd);
    }
  } catch (const std::exception& e) {
    log::error("gate failed", {{"error", e.what()}});
  }
  return exit_incomplete;
}

}  // namespace chatai::gate
