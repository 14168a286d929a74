// Tests of the limiter: the one-minute window, requests in flight, Retry-After, and subjects
// kept apart.
#include <doctest/doctest.h>

#include "chatai/gateway/limiter.hpp"

using namespace chatai::gateway;
using namespace std::chrono_literals;

TEST_CASE("requests per minute: a sliding window with the wait until a slot frees") {
  limiter l;
  const limits lim{3, 0};
  const auto t0 = limiter::clock::time_point{} + 1h;
  for (int i = 0; i < 3; ++i) {
    CHECK(l.acquire("k", lim, t0 + std::chrono::seconds(i * 10)).allowed);
    l.release("k");
  }
  const auto refused = l.acquire("k", lim, t0 + 30s);
  CHECK_FALSE(refused.allowed);
  CHECK(std::string(refused.reason) == "requests_per_minute");
  CHECK(refused.retry_after == 30s);  // the first arrival leaves the window at t0 + 60s
  CHECK(l.acquire("other", lim, t0 + 30s).allowed);
  CHECK_FALSE(l.acquire("k", lim, t0 + 59s).allowed);
  CHECK(l.acquire("k", lim, t0 + 60s).allowed);
}

TEST_CASE("concurrent requests are counted until released") {
  limiter l;
  const limits lim{0, 2};
  const auto now = limiter::clock::now();
  CHECK(l.acquire("k", lim, now).allowed);
  CHECK(l.acquire("k", lim, now).allowed);
  const auto refused = l.acquire("k", lim, now);
  CHECK_FALSE(refused.allowed);
  CHECK(std::string(refused.reason) == "concurrent_streams");
  CHECK(refused.retry_after >= 1s);
  CHECK(l.in_flight("k") == 2);
  l.release("k");
  CHECK(l.acquire("k", lim, now).allowed);
  CHECK(l.in_flight("k") == 2);
}

TEST_CASE("zero means unlimited") {
  limiter l;
  const auto now = limiter::clock::now();
  for (int i = 0; i < 1000; ++i) CHECK(l.acquire("k", {0, 0}, now).allowed);
  CHECK(l.in_flight("k") == 1000);
}
