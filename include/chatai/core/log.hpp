// Levelled logging to stderr, as text or as JSON lines, with structured fields.
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

namespace chatai::log {

enum class level { debug = 0, info, warn, error, off };

enum class format { text, json };

// A key and a value attached to a log line. Values are written as strings.
using field = std::pair<std::string_view, std::string_view>;

// Process-wide settings. Thread safety: all functions in this header are safe to call from
// any thread; each line is written with one write() so lines from threads do not interleave.
void set_level(level min_level) noexcept;
level current_level() noexcept;
void set_format(format f) noexcept;

// Parses "debug", "info", "warn", "error", "off". Returns false on anything else.
bool parse_level(std::string_view text, level& out) noexcept;

void write(level lvl, std::string_view message, std::initializer_list<field> fields = {});

inline bool enabled(level lvl) noexcept { return lvl >= current_level(); }
inline void debug(std::string_view m, std::initializer_list<field> f = {}) { if (enabled(level::debug)) write(level::debug, m, f); }
inline void info(std::string_view m, std::initializer_list<field> f = {}) { if (enabled(level::info)) write(level::info, m, f); }
inline void warn(std::string_view m, std::initializer_list<field> f = {}) { if (enabled(level::warn)) write(level::warn, m, f); }
inline void error(std::string_view m, std::initializer_list<field> f = {}) { if (enabled(level::error)) write(level::error, m, f); }

// Renders one line (with its trailing newline) the way write() would; used by tests.
std::string render(level lvl, std::string_view message, std::initializer_list<field> fields, format f);

}  // namespace chatai::log
