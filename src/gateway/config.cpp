// Reading and checking the gateway's config file.
#include "chatai/gateway/config.hpp"

#include <asio/ip/address.hpp>

#include "chatai/core/config.hpp"

namespace chatai::gateway {

namespace {

bool is_address(const std::string& text) {
  std::error_code ec;
  asio::ip::make_address(text, ec);
  return !ec;
}

void read_ms(json::reader& r, std::string_view key, std::chrono::milliseconds& out, std::int64_t min, std::int64_t max) {
  std::int64_t v = out.count();
  r.optional_in_range(key, v, min, max);
  out = std::chrono::milliseconds(v);
}

constexpr std::int64_t day_ms = 86400000;

void read_transport(json::reader& r, gateway_config& c) {
  std::string kind;
  r.required("kind", kind);
  if (r.failed()) return;
  if (kind == "ssh") {
    c.transport = transport_kind::ssh;
    auto& s = c.ssh;
    std::int64_t port = s.port, sessions = s.sessions, channels = s.channels_per_session, queued = s.max_queued;
    r.required("host", s.host);
    r.optional_in_range("port", port, 1, 65535);
    r.required("user", s.user);
    r.required("key_file", s.key_file);
    r.optional("passphrase", s.passphrase);
    r.required("known_hosts", s.known_hosts);
    r.optional("trust_on_first_use", s.trust_on_first_use);
    r.optional_in_range("sessions", sessions, 1, 256);
    r.optional_in_range("channels_per_session", channels, 1, 1024);
    r.optional_in_range("max_queued", queued, 1, 1 << 20);
    read_ms(r, "connect_timeout_ms", s.connect_timeout, 1, day_ms);
    read_ms(r, "keep_alive_interval_ms", s.keep_alive_interval, 0, day_ms);
    read_ms(r, "keep_alive_timeout_ms", s.keep_alive_timeout, 1, day_ms);
    s.port = static_cast<int>(port);
    s.sessions = static_cast<int>(sessions);
    s.channels_per_session = static_cast<int>(channels);
    s.max_queued = static_cast<int>(queued);
  } else if (kind == "local") {
    c.transport = transport_kind::local;
    auto& l = c.local;
    std::int64_t running = l.max_running, queued = l.max_queued;
    r.required("gate_program", l.gate_program);
    r.required("gate_config", l.gate_config);
    r.optional_in_range("max_running", running, 1, 4096);
    r.optional_in_range("max_queued", queued, 1, 1 << 20);
    read_ms(r, "keep_alive_interval_ms", l.keep_alive_interval, 0, day_ms);
    read_ms(r, "keep_alive_timeout_ms", l.keep_alive_timeout, 1, day_ms);
    l.max_running = static_cast<int>(running);
    l.max_queued = static_cast<int>(queued);
  } else {
    r.fail("kind", "must be \"ssh\" or \"local\", got \"" + kind + "\"");
  }
}

}  // namespace

result<gateway_config> parse_config(std::string_view text, std::string origin) {
  gateway_config c;
  auto st = config::load_text(text, std::move(origin), [&](json::reader& r) {
    r.object("listen", false, [&](json::reader& l) {
      std::int64_t port = c.port, threads = c.io_threads;
      l.optional("host", c.host);
      l.optional_in_range("port", port, 0, 65535);
      l.optional_in_range("io_threads", threads, 1, 256);
      if (!l.failed() && !is_address(c.host)) l.fail("host", "must be an IPv4 or IPv6 address literal");
      c.port = static_cast<std::uint16_t>(port);
      c.io_threads = static_cast<int>(threads);
    });
    std::string database;
    r.required("database", database);
    if (!r.failed() && database.empty()) r.fail("database", "must not be empty");
    c.database = database;
    r.object("transport", true, [&](json::reader& t) { read_transport(t, c); });
    r.object("limits", false, [&](json::reader& l) {
      l.optional_in_range("requests_per_minute", c.default_limits.requests_per_minute, 0, 1 << 30);
      l.optional_in_range("concurrent_streams", c.default_limits.concurrent_streams, 0, 1 << 20);
    });
    r.object("sso", false, [&](json::reader& s) {
      sso_settings sso;
      s.required("header", sso.header);
      s.optional("trusted_proxies", sso.trusted_proxies);
      if (s.failed()) return;
      if (sso.header.empty()) return s.fail("header", "must not be empty");
      for (const auto& a : sso.trusted_proxies)
        if (!is_address(a)) return s.fail("trusted_proxies", "'" + a + "' is not an IPv4 or IPv6 address literal");
      if (sso.trusted_proxies.empty()) return s.fail("trusted_proxies", "must name at least one proxy address");
      c.sso = std::move(sso);
    });
    r.optional("chat_page", c.chat_page);
    r.optional_in_range("max_body_bytes", c.max_body_bytes, 1, 64 * 1024 * 1024);
    r.object("timeouts", false, [&](json::reader& t) {
      read_ms(t, "first_byte_ms", c.first_byte_timeout, 1, day_ms);
      read_ms(t, "idle_ms", c.idle_timeout, 1, day_ms);
      read_ms(t, "status_refresh_ms", c.status_refresh, 10, day_ms);
      read_ms(t, "shutdown_grace_ms", c.shutdown_grace, 0, day_ms);
    });
  });
  if (!st) return std::move(st).err();
  return c;
}

result<gateway_config> load_config(const std::filesystem::path& path) {
  auto text = config::read_file(path);
  if (!text) return std::move(text).err();
  return parse_config(*text, path.string());
}

}  // namespace chatai::gateway
