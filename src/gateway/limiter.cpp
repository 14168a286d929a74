// Per-subject limits: a sliding one-minute window of arrivals and a count of requests in flight.
#include "chatai/gateway/limiter.hpp"

#include <algorithm>

namespace chatai::gateway {

limit_decision limiter::acquire(const std::string& subject, const limits& l, clock::time_point now) {
  constexpr auto window = std::chrono::minutes(1);
  std::lock_guard lock(mutex_);
  auto& s = subjects_[subject];
  while (!s.recent.empty() && s.recent.front() + window <= now) s.recent.pop_front();
  if (l.concurrent_streams > 0 && s.in_flight >= l.concurrent_streams)
    return {false, std::chrono::seconds(1), "concurrent_streams"};
  if (l.requests_per_minute > 0 && static_cast<std::int64_t>(s.recent.size()) >= l.requests_per_minute) {
    // The oldest arrival leaves the window first; round the wait up to whole seconds.
    const auto wait = s.recent[s.recent.size() - static_cast<std::size_t>(l.requests_per_minute)] + window - now;
    const auto seconds = std::chrono::ceil<std::chrono::seconds>(wait);
    return {false, std::max(seconds, std::chrono::seconds(1)), "requests_per_minute"};
  }
  if (l.requests_per_minute > 0) {
    s.recent.push_back(now);
    // Only the newest arrivals matter: the window never needs more than the limit.
    while (static_cast<std::int64_t>(s.recent.size()) > l.requests_per_minute) s.recent.pop_front();
  }
  ++s.in_flight;
  return {};
}

void limiter::release(const std::string& subject) {
  std::lock_guard lock(mutex_);
  const auto it = subjects_.find(subject);
  if (it == subjects_.end()) return;
  if (it->second.in_flight > 0) --it->second.in_flight;
  if (it->second.in_flight == 0 && it->second.recent.empty()) subjects_.erase(it);
}

std::int64_t limiter::in_flight(const std::string& subject) const {
  std::lock_guard lock(mutex_);
  const auto it = subjects_.find(subject);
  return it == subjects_.end() ? 0 : it->second.in_flight;
}

}  // namespace chatai::gateway
