// The gate's configuration file: state directory, allowed routes and headers, size limits, the
// cap on requests in flight, timeouts, circuit breaker settings and the scheduler tick run on
// keep-alive.
//
// The file (every field but state_dir optional; the values shown are the defaults):
//   {"state_dir": "/var/lib/chatai/gate",
//    "routes": ["POST /v1/chat/completions", "POST /v1/completions", "POST /v1/embeddings", "GET /v1/models"],
//    "headers": {"content-type": ["application/json", "application/json; charset=utf-8"],
//                "accept": ["application/json", "text/event-stream", "*/*"]},
//    "limits": {"max_header_bytes": 16384, "max_body_bytes": 4194304, "read_timeout_ms": 30000,
//               "max_in_flight_per_service": 128},
//    "backend": {"connect_timeout_ms": 5000, "first_byte_timeout_ms": 300000, "idle_timeout_ms": 120000,
//                "max_attempts": 2, "retry_after_s": 15},
//    "breaker": {"failure_threshold": 3, "cooldown_ms": 30000},
//    "tick": {"interval_s": 10, "timeout_ms": 60000, "command": []},
//    "session": {"max_requests": 256, "window_bytes": 262144, "idle_timeout_s": 600,
//                "max_session_requests": 100000, "max_lifetime_s": 14400}}
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "chatai/core/status.hpp"

namespace chatai::gate {

// One allowed route: a method and an exact path ("POST", "/v1/chat/completions").
struct route {
  std::string method;
  std::string path;
};

struct breaker_settings {
  std::int64_t failure_threshold = 3;              // consecutive failures that open it
  std::chrono::milliseconds cooldown{30000};       // open this long before one probe is let through
};

// keep-alive runs the scheduler tick when the last one is older than `interval`. The tick is
// the fixed argv of the config file (never anything from a request); empty runs nothing.
struct tick_settings {
  std::chrono::seconds interval{10};
  std::vector<std::string> command;
  std::chrono::milliseconds timeout{60000};
};

// Version 2's sessions (the `session` command): one gate process serves many requests.
struct session_settings {
  // Requests in flight at once on one session. 256 x the tunnel's 8 sessions carry 2,048
  // streams; each request in flight costs the gate two threads.
  std::int64_t max_requests = 256;
  std::int64_t window_bytes = 256 * 1024;  // response bytes sent ahead of the client's reading
  std::chrono::seconds idle_timeout{600};  // with nothing in flight, then goaway
  // After so many requests or so long the session says goaway, so that a gate process (and
  // the config it read) never lives for ever; the tunnel opens a fresh one beside it.
  std::int64_t max_session_requests = 100000;
  std::chrono::seconds max_lifetime{4 * 3600};
};

// Everything the gate reads from its config file. Defaults are those of the protocol.
// Thread safety: a value type.
struct gate_config {
  std::filesystem::path state_dir;
  std::vector<route> routes = {{"POST", "/v1/chat/completions"},
                               {"POST", "/v1/completions"},
                               {"POST", "/v1/embeddings"},
                               {"GET", "/v1/models"}};
  // Header names (lower case) the client may send, each with the exact values allowed
  // (compared without regard to case). Nothing else is passed to a backend.
  std::map<std::string, std::vector<std::string>> headers = {
      {"content-type", {"application/json", "application/json; charset=utf-8"}},
      {"accept", {"application/json", "text/event-stream", "*/*"}},
  };
  std::int64_t max_header_bytes = 16 * 1024;  // the JSON header line with its newline
  std::int64_t max_body_bytes = 4 * 1024 * 1024;
  // Requests of one service in flight at once, beyond which the gate answers 503 with
  // Retry-After. Per service, because each service's autoscaler scales on its own demand (the
  // in-flight markers): the cap bounds the demand anyone holding the gate's key can create
  // for one service, and a busy service never refuses another's requests. 128 lies above the
  // 80 requests a gateway's tunnel carries at once by default (8 sessions x 10 channels), so
  // a default deployment is never refused by it; sites that know their largest service set it
  // near max_instances x requests_per_instance.
  std::int64_t max_in_flight_per_service = 128;
  std::chrono::milliseconds read_timeout{30000};   // the whole request from stdin
  std::chrono::milliseconds connect_timeout{5000};
  std::chrono::milliseconds first_byte_timeout{300000};  // prompt processing can be slow
  std::chrono::milliseconds idle_timeout{120000};        // between two chunks of a response
  std::int64_t max_attempts = 2;                         // backends tried per request
  std::chrono::seconds retry_after{15};                  // told to clients with a 503
  breaker_settings breaker;
  tick_settings tick;
  session_settings session;
};

// Hard bounds no config file can lift.
inline constexpr std::int64_t max_header_bytes_limit = 16 * 1024;
inline constexpr std::int64_t max_body_bytes_limit = 64 * 1024 * 1024;
inline constexpr std::int64_t max_in_flight_limit = 100000;

// Reads a config file. Unknown keys, duplicate keys, wrong types, values out of range, a
// route outside the allowed shape, a header name the gate owns (host, authorization,
// content-length, transfer-encoding, connection, ...) and a relative path are all errors.
result<gate_config> load_config(const std::filesystem::path& path);
result<gate_config> parse_config(std::string_view text, std::string name);

}  // namespace chatai::gate
