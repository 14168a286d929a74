// Per-subject limits: requests per minute (a sliding window) and requests in flight at once.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <unordered_map>

namespace chatai::gateway {

// The limits of one subject (an API key or a user); 0 means unlimited.
// Thread safety: a value type (and so is limit_decision).
struct limits {
  std::int64_t requests_per_minute = 60;
  std::int64_t concurrent_streams = 4;
};

// The answer to one request: allowed, or refused with how long to wait.
struct limit_decision {
  bool allowed = true;
  std::chrono::seconds retry_after{0};
  const char* reason = "";  // "requests_per_minute" or "concurrent_streams" when refused
};

// Counts requests per subject. An allowed request holds one concurrency slot until release().
// Thread safety: all members may be called from any thread.
class limiter {
 public:
  using clock = std::chrono::steady_clock;

  limit_decision acquire(const std::string& subject, const limits& l, clock::time_point now = clock::now());
  void release(const std::string& subject);

  // Requests holding a slot for `subject`.
  std::int64_t in_flight(const std::string& subject) const;

 private:
  struct subject_state {
    std::deque<clock::time_point> recent;  // arrivals within the last minute
    std::int64_t in_flight = 0;
  };

  mutable std::mutex mutex_;
  std::unordered_map<std::string, subject_state> subjects_;
};

}  // namespace chatai::gateway
