// Wall-clock time as the state files, usage records and API keys store it.
#pragma once

#include <chrono>
#include <cstdint>

namespace chatai {

// Milliseconds since the Unix epoch.
inline std::int64_t unix_ms_now() noexcept {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace chatai
