// API keys and usage accounting in one SQLite database: keys stored only as salted SHA-256
// hashes, usage written by a background thread (WAL mode) so request threads never wait on disk.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "chatai/core/status.hpp"

namespace chatai::gateway {

// Overrides of the configured default limits for one key; unset: the default applies.
// Thread safety: a value type, as are the other structs of this header.
struct key_limits {
  std::optional<std::int64_t> requests_per_minute;
  std::optional<std::int64_t> concurrent_streams;
};

// What the store knows about a key (never its secret).
// Thread safety: a value type.
struct key_info {
  std::string id;  // the public lookup id, part of the key
  std::string user;
  std::int64_t created_at_ms = 0;  // Unix time
  std::optional<std::int64_t> expires_at_ms;
  std::optional<std::int64_t> revoked_at_ms;
  key_limits limits;
};

// A key just created: `key` is the only copy of the secret and is shown once.
struct created_key {
  key_info info;
  std::string key;  // "sk-chatai-<id>-<64 hex digits>"
};

// One forwarded request, as accounted. Never any prompt or completion text.
struct usage_event {
  std::string request_id;
  std::string key_id;  // empty for a user signed in through the reverse proxy
  std::string user;
  std::string model;
  int status = 0;
  std::int64_t prompt_tokens = 0;
  std::int64_t completion_tokens = 0;
  std::int64_t at_ms = 0;  // Unix time the request arrived
  std::int64_t duration_ms = 0;
};

// Totals of one key or one user.
struct usage_total {
  std::string key_id;  // empty in the per-user rows (and for proxy-authenticated users)
  std::string user;
  std::int64_t requests = 0;
  std::int64_t prompt_tokens = 0;
  std::int64_t completion_tokens = 0;
};

struct usage_report {
  std::vector<usage_total> by_key;   // sorted by key id
  std::vector<usage_total> by_user;  // sorted by user
};

// Thread safety: all members may be called from any thread. Reads and key changes share one
// connection under a mutex; usage events go through a queue to the writer thread, which has its
// own connection and commits them in batches.
class key_store {
 public:
  // Opens or creates the database (mode 0600, WAL journal) and its tables.
  static result<std::unique_ptr<key_store>> open(const std::filesystem::path& path);
  // Writes what is queued, then closes.
  ~key_store();
  key_store(const key_store&) = delete;
  key_store& operator=(const key_store&) = delete;

  // A new key for `user` (non-empty, at most 128 bytes, no control characters). Limits must be
  // positive when set; 0 means unlimited.
  result<created_key> create(std::string_view user, std::optional<std::int64_t> expires_at_ms, key_limits limits);

  // The key's record when `presented` is a known, unexpired, unrevoked key whose secret matches
  // (compared in constant time). Otherwise errc::permission_denied, naming expiry or revocation
  // when the secret matched but the key is no longer valid.
  result<key_info> verify(std::string_view presented, std::int64_t now_ms) const;

  // Revokes a key by id (errc::not_found when unknown). Revoking twice is fine.
  status revoke(std::string_view id, std::int64_t now_ms);

  // Every key, sorted by creation time.
  result<std::vector<key_info>> list() const;

  // Queues one event for the writer thread; returns at once.
  void record(usage_event event);
  // Waits until every event queued so far is committed.
  void flush();

  // Totals of the events at or after `since_ms` (all when unset), per key and per user.
  result<usage_report> usage(std::optional<std::int64_t> since_ms) const;

  struct impl;

 private:
  explicit key_store(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};


// A point in time from the command line: a span ("30d", "12h", "45m", "90s") counted from
// `now_ms` forward (future) or back, or an ISO date ("2026-12-31", midnight UTC) or date and
// time ("2026-12-31T18:00:00Z", UTC).
result<std::int64_t> parse_time(std::string_view text, std::int64_t now_ms, bool future);

// "2026-12-31T18:00:00Z" for a Unix time in milliseconds.
std::string format_time(std::int64_t unix_ms);

}  // namespace chatai::gateway
