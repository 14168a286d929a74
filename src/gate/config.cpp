// Reading and checking the gate's config file.
#include "chatai/gate/config.hpp"

#include <algorithm>

#include "chatai/core/config.hpp"

namespace chatai::gate {

namespace {

// Header fields the gate writes itself, or that no client may set on a backend request.
constexpr std::string_view owned_headers[] = {
    "host", "authorization", "proxy-authorization", "content-length", "transfer-encoding", "connection",
    "keep-alive", "upgrade", "te", "trailer", "expect", "cookie", "forwarded", "x-forwarded-for",
    "x-forwarded-host", "x-real-ip"};

bool valid_route_path(std::string_view path) {
  if (path.size() < 2 || path.size() > 128 || path.front() != '/') return false;
  if (path.find("//") != std::string_view::npos || path.find("/.") != std::string_view::npos) return false;
  return std::all_of(path.begin(), path.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '/' || c == '-' ||
           c == '_' || c == '.';
  });
}

bool valid_header_name(std::string_view name) {
  return !name.empty() && name.size() <= 64 && std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
  });
}

bool printable(std::string_view value) {
  return std::all_of(value.begin(), value.end(), [](char c) { return c >= 0x20 && c < 0x7F; });
}

}  // namespace

result<gate_config> parse_config(std::string_view text, std::string name) {
  gate_config c;
  auto st = config::load_text(text, std::move(name), [&](json::reader& r) {
    std::string state_dir;
    r.required("state_dir", state_dir);
    if (!r.failed()) {
      c.state_dir = state_dir;
      if (!c.state_dir.is_absolute()) r.fail("state_dir", "must be an absolute path");
    }
    std::vector<std::string> routes;
    r.optional("routes", routes);
    if (!routes.empty()) {
      c.routes.clear();
      for (const auto& line : routes) {
        const auto space = line.find(' ');
        route rt{line.substr(0, space), space == std::string::npos ? "" : line.substr(space + 1)};
        if ((rt.method != "GET" && rt.method != "POST") || !valid_route_path(rt.path))
          return r.fail("routes", "'" + line + "' is not \"GET /path\" or \"POST /path\"");
        c.routes.push_back(std::move(rt));
      }
    }
    if (const auto* headers = r.raw("headers")) {
      if (!headers->IsObject()) return r.fail("headers", "expected an object of arrays of strings");
      c.headers.clear();
      json::reader h(*headers, "", r.field_path("headers"));
      for (auto it = headers->MemberBegin(); it != headers->MemberEnd(); ++it) {
        const std::string header(it->name.GetString(), it->name.GetStringLength());
        if (!valid_header_name(header)) return r.fail("headers", "'" + header + "' is not a lower-case header name");
        if (std::find(std::begin(owned_headers), std::end(owned_headers), header) != std::end(owned_headers))
          return r.fail("headers", "'" + header + "' is set by the gate and cannot be allowed");
        std::vector<std::string> values;
        h.optional(header, values);
        for (const auto& v : values)
          if (v.empty() || v.size() > 256 || !printable(v))
            return r.fail("headers", "a value of '" + header + "' is empty, too long or not printable");
        c.headers[header] = std::move(values);
      }
      if (auto hs = h.finish(); !hs) return r.fail("headers", hs.err().message());
    }
    r.object("limits", false, [&](json::reader& l) {
      l.optional_in_range("max_header_bytes", c.max_header_bytes, 256, max_header_bytes_limit);
      l.optional_in_range("max_body_bytes", c.max_body_bytes, 0, max_body_bytes_limit);
      std::int64_t read_ms = c.read_timeout.count();
      l.optional_in_range("read_timeout_ms", read_ms, 1, 600000);
      l.optional_in_range("max_in_flight_per_service", c.max_in_flight_per_service, 1, max_in_flight_limit);
      c.read_timeout = std::chrono::milliseconds(read_ms);
    });
    r.object("backend", false, [&](json::reader& b) {
      std::int64_t connect_ms = c.connect_timeout.count(), first_ms = c.first_byte_timeout.count(),
                   idle_ms = c.idle_timeout.count(), retry_s = c.retry_after.count();
      b.optional_in_range("connect_timeout_ms", connect_ms, 1, 600000);
      b.optional_in_range("first_byte_timeout_ms", first_ms, 1, 3600000);
      b.optional_in_range("idle_timeout_ms", idle_ms, 1, 3600000);
      b.optional_in_range("max_attempts", c.max_attempts, 1, 8);
      b.optional_in_range("retry_after_s", retry_s, 1, 3600);
      c.connect_timeout = std::chrono::milliseconds(connect_ms);
      c.first_byte_timeout = std::chrono::milliseconds(first_ms);
      c.idle_timeout = std::chrono::milliseconds(idle_ms);
      c.retry_after = std::chrono::seconds(retry_s);
    });
    r.object("breaker", false, [&](json::reader& b) {
      std::int64_t cooldown_ms = c.breaker.cooldown.count();
      b.optional_in_range("failure_threshold", c.breaker.failure_threshold, 1, 1000);
      b.optional_in_range("cooldown_ms", cooldown_ms, 1, 86400000);
      c.breaker.cooldown = std::chrono::milliseconds(cooldown_ms);
    });
    r.object("tick", false, [&](json::reader& t) {
      std::int64_t interval_s = c.tick.interval.count(), timeout_ms = c.tick.timeout.count();
      t.optional_in_range("interval_s", interval_s, 1, 86400);
      t.optional_in_range("timeout_ms", timeout_ms, 1, 3600000);
      t.optional("command", c.tick.command);
      c.tick.interval = std::chrono::seconds(interval_s);
      c.tick.timeout = std::chrono::milliseconds(timeout_ms);
      if (!c.tick.command.empty() && !std::filesystem::path(c.tick.command.front()).is_absolute())
        t.fail("command", "the program must be an absolute path");
    });
    r.object("session", false, [&](json::reader& s) {
      std::int64_t idle_s = c.session.idle_timeout.count(), lifetime_s = c.session.max_lifetime.count();
      s.optional_in_range("max_requests", c.session.max_requests, 1, 4096);
      s.optional_in_range("window_bytes", c.session.window_bytes, 4096, 16 * 1024 * 1024);
      s.optional_in_range("idle_timeout_s", idle_s, 1, 86400);
      s.optional_in_range("max_session_requests", c.session.max_session_requests, 1, 100000000);
      s.optional_in_range("max_lifetime_s", lifetime_s, 1, 7 * 86400);
      c.session.idle_timeout = std::chrono::seconds(idle_s);
      c.session.max_lifetime = std::chrono::seconds(lifetime_s);
    });
  });
  if (!st) return std::move(st).err();
  return c;
}

result<gate_config> load_config(const std::filesystem::path& path) {
  auto text = config::read_file(path);
  if (!text) return std::move(text).err();
  return parse_config(*text, path.string());
}

}  // namespace chatai::gate
