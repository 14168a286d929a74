// Usage records and the scanner that picks token counts out of streaming responses.
#include "chatai/gate/usage.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <rapidjson/document.h>

#include "chatai/core/json.hpp"
#include "chatai/core/unique_fd.hpp"

namespace chatai::gate {

namespace {
constexpr std::size_t max_scanned = 1 << 20;
// No request comes near 2^40 tokens; a count beyond it is as wrong as a negative one.
constexpr std::int64_t max_token_count = std::int64_t(1) << 40;

// A count is believed only when it is a whole number in [0, max_token_count]. A wrong one is
// rejected rather than clamped: clamping would record a number the backend never meant (and a
// negative count would credit the key), while absent is what the records already say when a
// backend reports nothing. A rejected count leaves an earlier good one of the same stream.
void take_count(const rapidjson::Value& usage, const char* name, std::optional<std::int64_t>& out) {
  const auto it = usage.FindMember(name);
  if (it == usage.MemberEnd() || !it->value.IsInt64()) return;
  const std::int64_t n = it->value.GetInt64();
  if (n >= 0 && n <= max_token_count) out = n;
}

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

void usage_scanner::scan_json(std::string_view text) {
  rapidjson::Document doc;
  doc.Parse<rapidjson::kParseIterativeFlag>(text.data(), text.size());
  if (doc.HasParseError() || !doc.IsObject()) return;
  const rapidjson::Value& root = doc;
  const auto usage = root.FindMember("usage");
  if (usage == root.MemberEnd() || !usage->value.IsObject()) return;
  take_count(usage->value, "prompt_tokens", prompt_tokens_);
  take_count(usage->value, "completion_tokens", completion_tokens_);
}

void usage_scanner::feed(std::string_view bytes) {
  if (!event_stream_) {
    if (overflow_) return;
    if (pending_.size() + bytes.size() > max_scanned) {
      overflow_ = true;
      pending_.clear();
      return;
    }
    pending_.append(bytes);
    return;
  }
  while (!bytes.empty()) {
    const auto newline = bytes.find('\n');
    const std::string_view piece = bytes.substr(0, newline);
    if (!overflow_) {
      if (pending_.size() + piece.size() > max_scanned) {
        overflow_ = true;
        pending_.clear();
      } else {
        pending_.append(piece);
      }
    }
    if (newline == std::string_view::npos) return;
    bytes.remove_prefix(newline + 1);
    if (!overflow_) {
      std::string_view line(pending_);
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      if (line.substr(0, 5) == "data:") {
        line.remove_prefix(5);
        if (!line.empty() && line.front() == ' ') line.remove_prefix(1);
        if (line != "[DONE]") scan_json(line);
      }
    }
    pending_.clear();
    overflow_ = false;
  }
}

void usage_scanner::finish() {
  if (!event_stream_ && !overflow_) scan_json(pending_);
  pending_.clear();
}

}  // namespace chatai::gate
