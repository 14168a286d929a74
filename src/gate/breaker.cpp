// The per-backend circuit breaker stored as one small JSON file under an flock.
#include "chatai/gate/breaker.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "chatai/core/config.hpp"
#include "chatai/core/json.hpp"
#include "chatai/core/unique_fd.hpp"

namespace chatai::gate {

namespace {

error os_error(const std::string& path, std::string_view what) {
  return error(errc::io_error, path + ": " + std::string(what) + ": " + std::strerror(errno));
}

breaker_record parse_record(std::string_view text) {
  breaker_record rec;
  std::string state;
  auto st = config::load_text(text, "breaker", [&](json::reader& r) {
    r.required("state", state);
    r.required("consecutive_failures", rec.consecutive_failures);
    r.required("opened_at_ms", rec.opened_at_ms);
    r.required("probe_at_ms", rec.probe_at_ms);
  });
  if (!st) return {};
  if (state == "open") rec.state = breaker_state::open;
  else if (state == "half_open") rec.state = breaker_state::half_open;
  else rec.state = breaker_state::closed;
  return rec;
}

std::string format_record(const breaker_record& rec) {
  return "{\"state\":\"" + std::string(to_string(rec.state)) +
         "\",\"consecutive_failures\":" + std::to_string(rec.consecutive_failures) +
         ",\"opened_at_ms\":" + std::to_string(rec.opened_at_ms) + ",\"probe_at_ms\":" + std::to_string(rec.probe_at_ms) +
         "}\n";
}

result<std::string> read_all(int fd, const std::string& path) {
  std::string text;
  char buffer[512];
  for (;;) {
    const ssize_t n = ::pread(fd, buffer, sizeof buffer, static_cast<off_t>(text.size()));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return os_error(path, "read");
    if (n == 0 || text.size() > 4096) return text;
    text.append(buffer, static_cast<std::size_t>(n));
  }
}

}  // namespace

std::string_view to_string(breaker_state state) noexcept {
  switch (state) {
    case breaker_state::closed: return "closed";
    case breaker_state::open: return "open";
    case breaker_state::half_open: return "half_open";
  }
  return "closed";
}

breaker::breaker(const slurm::state_dir& dir, std::string job, breaker_settings settings)
    : path_((dir.breakers_dir() / job).string()), job_(std::move(job)), settings_(settings) {}

template <class Fn>
result<bool> breaker::update(Fn&& fn) {
  if (!slurm::valid_job_id(job_)) return error(errc::invalid_argument, "not a valid job id");
  const std::filesystem::path folder = std::filesystem::path(path_).parent_path();
  CHATAI_RETURN_IF_ERROR(slurm::ensure_dir(folder.parent_path()));
  CHATAI_RETURN_IF_ERROR(slurm::ensure_dir(folder));
  unique_fd fd(::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd) return os_error(path_, "open");
  while (::flock(fd.get(), LOCK_EX) != 0)
    if (errno != EINTR) return os_error(path_, "flock");
  auto text = read_all(fd.get(), path_);
  if (!text) return std::move(text).err();
  breaker_record rec = parse_record(*text);
  const breaker_record before = rec;
  const bool answer = fn(rec);
  if (rec.state != before.state || rec.consecutive_failures != before.consecutive_failures ||
      rec.opened_at_ms != before.opened_at_ms || rec.probe_at_ms != before.probe_at_ms) {
    const std::string out = format_record(rec);
    if (::ftruncate(fd.get(), 0) != 0) return os_error(path_, "truncate");
    if (::pwrite(fd.get(), out.data(), out.size(), 0) != static_cast<ssize_t>(out.size()))
      return os_error(path_, "write");
  }
  return answer;
}

namespace {

// A closed breaker without failures: what nearly every request finds, and what neither a
// request let through nor a success changes. Read without the lock: a writer in between is
// as if it had come just after.
bool untouched(const result<breaker_record>& rec) {
  return rec && rec->state == breaker_state::closed && rec->consecutive_failures == 0;
}

}  // namespace

result<bool> breaker::try_acquire(std::int64_t now_ms) {
  if (untouched(read())) return true;
  const std::int64_t cooldown = settings_.cooldown.count();
  return update([&](breaker_record& rec) {
    switch (rec.state) {
      case breaker_state::closed: return true;
      case breaker_state::open:
        if (now_ms - rec.opened_at_ms < cooldown) return false;
        rec.state = breaker_state::half_open;
        rec.probe_at_ms = now_ms;
        return true;
      case breaker_state::half_open:
        if (now_ms - rec.probe_at_ms < cooldown) return false;
        rec.probe_at_ms = now_ms;
        return true;
    }
    return false;
  });
}

status breaker::record_success() {
  if (untouched(read())) return {};
  auto r = update([](breaker_record& rec) {
    rec = breaker_record{};
    return true;
  });
  if (!r) return std::move(r).err();
  return {};
}

status breaker::record_failure(std::int64_t now_ms) {
  auto r = update([&](breaker_record& rec) {
    ++rec.consecutive_failures;
    if (rec.state == breaker_state::half_open || rec.consecutive_failures >= settings_.failure_threshold) {
      rec.state = breaker_state::open;
      rec.opened_at_ms = now_ms;
    }
    return true;
  });
  if (!r) return std::move(r).err();
  return {};
}

result<breaker_record> breaker::read() const {
  if (!slurm::valid_job_id(job_)) return error(errc::invalid_argument, "not a valid job id");
  unique_fd fd(::open(path_.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) {
    if (errno == ENOENT) return breaker_record{};
    return os_error(path_, "open");
  }
  auto text = read_all(fd.get(), path_);
  if (!text) return std::move(text).err();
  return parse_record(*text);
}

}  // namespace chatai::gate
