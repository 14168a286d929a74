// Usage records: one JSON line per request in the state directory's usage.jsonl, and the
// scanner that finds the token counts in a response as it streams past. Never any prompt or
// completion text.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "chatai/core/status.hpp"
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

// Finds "usage":{"prompt_tokens":..,"completion_tokens":..} in a response body fed piece by
// piece: in each server-sent event of a stream, or in a JSON body of at most 1 MiB. Only the
// counts are kept, and only counts in [0, 2^40]: any other is taken for absent.
// Thread safety: not thread-safe; one per response.
class usage_scanner {
 public:
  explicit usage_scanner(bool event_stream) : event_stream_(event_stream) {}

  void feed(std::string_view bytes);
  // Scans what is left (a JSON body ends with the response).
  void finish();

  std::optional<std::int64_t> prompt_tokens() const noexcept { return prompt_tokens_; }
  std::optional<std::int64_t> completion_tokens() const noexcept { return completion_tokens_; }

 private:
  void scan_json(std::string_view text);

  bool event_stream_;
  bool overflow_ = false;
  std::string pending_;
  std::optional<std::int64_t> prompt_tokens_;
  std::optional<std::int64_t> completion_tokens_;
};

}  // namespace chatai::gate
