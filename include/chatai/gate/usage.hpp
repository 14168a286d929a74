// Usage records: one JSON line per request in the state directory's usage.jsonl, with the
// token counts the protocol's usage scanner found. Never any prompt or completion text.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "chatai/core/status.hpp"
#include "chatai/proto/usage.hpp"
#include "chatai/slurm/registry.hpp"

namespace chatai::gate {

// One request's record. Thread safety: a value type.
struct usage_record {
  std::string id;
  std::string user;
  std::string service;
  std::string backend;  // the job that answered; empty when none did
  int status = 0;       // the HTTP status the client got
  // ok, rejected, busy (beyond the cap on requests in flight), no_backend, backend_failed,
  // client_gone
  std::string outcome;
  std::optional<std::int64_t> prompt_tokens;
  std::optional<std::int64_t> completion_tokens;
  std::int64_t started_at_ms = 0;  // Unix time
  std::int64_t first_byte_ms = -1;  // from start to the first response byte; -1 when none
  std::int64_t duration_ms = 0;
  bool stream = false;

  std::string to_json_line() const;
};

// Appends one record with a single write under an flock on the file (mode 0600).
status append_usage(const slurm::state_dir& dir, const usage_record& record);

// The scanner of the token counts in a response (see chatai/proto/usage.hpp).
using proto::usage_scanner;

}  // namespace chatai::gate
