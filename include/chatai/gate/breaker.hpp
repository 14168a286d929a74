// The circuit breaker of one backend, shared by every gate process through a file in the
// state directory's breakers/ folder and updated under an flock on that file.
//
// closed: requests pass; N consecutive failures (connection failures or 5xx) open it.
// open: requests skip the backend until the cool-down has passed; then one request at a time
//   is let through as a probe (half-open).
// half-open: success closes it, failure opens it again for another cool-down. A probe whose
//   gate died is given up after one more cool-down, so no probe and no lock can stop the
//   backend for good.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "chatai/core/clock.hpp"
#include "chatai/core/status.hpp"
#include "chatai/gate/config.hpp"
#include "chatai/slurm/registry.hpp"

namespace chatai::gate {

enum class breaker_state { closed, open, half_open };

std::string_view to_string(breaker_state state) noexcept;

// What the file holds. Times are milliseconds since the Unix epoch.
struct breaker_record {
  breaker_state state = breaker_state::closed;
  std::int64_t consecutive_failures = 0;
  std::int64_t opened_at_ms = 0;
  std::int64_t probe_at_ms = 0;
};

// Thread safety: each call opens, locks and closes the file, so any number of processes and
// threads may use breakers of the same backend at once.
class breaker {
 public:
  breaker(const slurm::state_dir& dir, std::string job, breaker_settings settings);

  // Whether a request may go to the backend now. When the cool-down of an open breaker has
  // passed, the first caller gets true and the breaker turns half-open.
  result<bool> try_acquire(std::int64_t now_ms);
  status record_success();
  status record_failure(std::int64_t now_ms);

  // The stored record (closed when there is none or it is unreadable).
  result<breaker_record> read() const;

 private:
  template <class Fn>
  result<bool> update(Fn&& fn);

  std::string path_;
  std::string job_;
  breaker_settings settings_;
};

using chatai::unix_ms_now;

}  // namespace chatai::gate
