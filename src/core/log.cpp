// Log lines as text or JSON, written to stderr with one write() per line.
#include "chatai/core/log.hpp"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <ctime>

#include "chatai/core/json.hpp"

namespace chatai::log {

namespace {
std::atomic<level> g_level{level::info};
std::atomic<format> g_format{format::text};

std::string_view level_name(level lvl) {
  switch (lvl) {
    case level::debug: return "debug";
    case level::info: return "info";
    case level::warn: return "warn";
    case level::error: return "error";
    case level::off: return "off";
  }
  return "info";
}

std::string timestamp() {
  const auto now = std::chrono::system_clock::now();
  const auto seconds = std::chrono::system_clock::to_time_t(now);
  const auto millis =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&seconds, &tm);
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(millis));
  return buffer;
}

bool needs_quotes(std::string_view value) {
  if (value.empty()) return true;
  for (const char c : value) {
    if (c == ' ' || c == '"' || c == '=' || static_cast<unsigned char>(c) < 0x20) return true;
  }
  return false;
}
}  // namespace

void set_level(level min_level) noexcept { g_level.store(min_level); }
level current_level() noexcept { return g_level.load(); }
void set_format(format f) noexcept { g_format.store(f); }

bool parse_level(std::string_view text, level& out) noexcept {
  for (const level lvl : {level::debug, level::info, level::warn, level::error, level::off}) {
    if (text == level_name(lvl)) {
      out = lvl;
      return true;
    }
  }
  return false;
}

std::string render(level lvl, std::string_view message, std::initializer_list<field> fields, format f) {
  std::string line;
  line.reserve(128);
  if (f == format::json) {
    line += "{\"ts\":\"" + timestamp() + "\",\"level\":\"";
    line += level_name(lvl);
    line += "\",\"msg\":";
    json::append_quoted(line, message);
    for (const auto& [key, value] : fields) {
      line.push_back(',');
      json::append_quoted(line, key);
      line.push_back(':');
      json::append_quoted(line, value);
    }
    line += "}\n";
  } else {
    line += timestamp();
    line.push_back(' ');
    line += level_name(lvl);
    line.push_back(' ');
    line += message;
    for (const auto& [key, value] : fields) {
      line.push_back(' ');
      line += key;
      line.push_back('=');
      if (needs_quotes(value)) json::append_quoted(line, value);
      else line += value;
    }
    line.push_back('\n');
  }
  return line;
}

void write(level lvl, std::string_view message, std::initializer_list<field> fields) {
  if (lvl < g_level.load() || lvl == level::off) return;
  const std::string line = render(lvl, message, fields, g_format.load());
  // One write() keeps lines whole across threads; a failed log write has nowhere to go.
  const char* data = line.data();
  std::size_t left = line.size();
  while (left > 0) {
    const ssize_t n = ::write(STDERR_FILENO, data, left);
    if (n <= 0) return;
    data += n;
    left -= static_cast<std::size_t>(n);
  }
}

}  // namespace chatai::log
