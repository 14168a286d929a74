// Usage records: one JSON line per request, appended under an flock.
#include "chatai/gate/usage.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "chatai/core/json.hpp"
#include "chatai/core/unique_fd.hpp"

namespace chatai::gate {

namespace {
void append_field(std::string& out, std::string_view name, std::string_view value) {
  out += ",\"";
  out += name;
  out += "\":";
  json::append_quoted(out, value);
}

void append_number(std::string& out, std::string_view name, std::optional<std::int64_t> value) {
  out += ",\"";
  out += name;
  out += "\":";
  out += value ? std::to_string(*value) : "null";
}
}  // namespace

std::string usage_record::to_json_line() const {
  std::string out = "{\"id\":";
  json::append_quoted(out, id);
  append_field(out, "user", user);
  append_field(out, "service", service);
  append_field(out, "backend", backend);
  out += ",\"status\":" + std::to_string(status);
  append_field(out, "outcome", outcome);
  out += ",\"stream\":";
  out += stream ? "true" : "false";
  append_number(out, "prompt_tokens", prompt_tokens);
  append_number(out, "completion_tokens", completion_tokens);
  append_number(out, "started_at_ms", started_at_ms);
  append_number(out, "first_byte_ms", first_byte_ms < 0 ? std::nullopt : std::optional<std::int64_t>(first_byte_ms));
  append_number(out, "duration_ms", duration_ms);
  out += "}\n";
  return out;
}

status append_usage(const slurm::state_dir& dir, const usage_record& record) {
  CHATAI_RETURN_IF_ERROR(slurm::ensure_dir(dir.root()));
  const std::string path = dir.usage_file().string();
  unique_fd fd(::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd) return error(errc::io_error, path + ": open: " + std::strerror(errno));
  while (::flock(fd.get(), LOCK_EX) != 0)
    if (errno != EINTR) return error(errc::io_error, path + ": flock: " + std::strerror(errno));
  const std::string line = record.to_json_line();
  if (::write(fd.get(), line.data(), line.size()) != static_cast<ssize_t>(line.size()))
    return error(errc::io_error, path + ": write: " + std::strerror(errno));
  return {};
}

}  // namespace chatai::gate
