// The gateway's configuration: where it listens, its database, the transport to the cluster,
// default limits, single sign-on through a reverse proxy, the chat page, sizes and timeouts.
//
// The JSON file (every field but "database" and "transport" optional; unknown fields are errors):
//   {
//     "listen": {"host": "127.0.0.1", "port": 8080, "io_threads": 2},    // port 0: any free port
//     "database": "/var/lib/chatai/gateway.db",                          // keys and usage (SQLite)
//     "transport": {"kind": "ssh", "host": "login.hpc.example", "port": 22, "user": "chatai",
//                   "key_file": "/etc/chatai/id_ed25519", "known_hosts": "/etc/chatai/known_hosts",
//                   "trust_on_first_use": false, "sessions": 4, "channels_per_session": 10,
//                   "connect_timeout_ms": 5000, "keep_alive_interval_ms": 5000},
//            or {"kind": "local", "gate_program": "/usr/bin/chatai-gate",
//                "gate_config": "/etc/chatai/gate.json", "max_running": 64, "keep_alive_interval_ms": 5000},
//     "limits": {"requests_per_minute": 60, "concurrent_streams": 4},   // per key; 0: unlimited
//     "sso": {"header": "X-Remote-User", "trusted_proxies": ["127.0.0.1"]},
//     "chat_page": true,
//     "max_body_bytes": 4194304,
//     "timeouts": {"first_byte_ms": 300000, "idle_ms": 120000, "status_refresh_ms": 5000,
//                  "shutdown_grace_ms": 30000}
//   }
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "chatai/core/status.hpp"
#include "chatai/gateway/limiter.hpp"
#include "chatai/tunnel/local_transport.hpp"
#include "chatai/tunnel/ssh_transport.hpp"

namespace chatai::gateway {

enum class transport_kind { ssh, local };

// Users signed in by a reverse proxy: the proxy names them in `header`, which is believed only
// on connections from one of `trusted_proxies` (address literals); from anywhere else the
// header is ignored and the request needs an API key. A trusted proxy's request that carries the
// header more than once is refused with 400.
// Thread safety: a value type.
struct sso_settings {
  std::string header;
  std::vector<std::string> trusted_proxies;
};

// Thread safety: a value type.
struct gateway_config {
  std::string host = "127.0.0.1";  // TLS is the reverse proxy's job: loopback by default
  std::uint16_t port = 8080;       // 0: any free port
  int io_threads = 2;
  std::filesystem::path database;

  transport_kind transport = transport_kind::local;
  tunnel::ssh_options ssh;      // when transport is ssh
  tunnel::local_options local;  // when transport is local

  limits default_limits;  // per key (or per single-sign-on user) unless the key overrides them
  std::optional<sso_settings> sso;
  bool chat_page = true;
  std::int64_t max_body_bytes = 4 * 1024 * 1024;

  std::chrono::milliseconds first_byte_timeout{300000};  // the cluster may have to start a job
  std::chrono::milliseconds idle_timeout{120000};        // between two pieces of an answer
  std::chrono::milliseconds status_refresh{5000};        // how often the model list is renewed
  std::chrono::milliseconds shutdown_grace{30000};       // for streams in flight on stop
};

// Parses the JSON text of a config; `origin` names it in errors ("gateway.json: field
// 'transport.port': ..."). Relative paths stay as written.
result<gateway_config> parse_config(std::string_view text, std::string origin);
// Reads and parses a config file.
result<gateway_config> load_config(const std::filesystem::path& path);

}  // namespace chatai::gateway
