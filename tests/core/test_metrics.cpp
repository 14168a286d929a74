// Tests of the metrics registry and its Prometheus text exposition.
#include <doctest/doctest.h>

#include <stdexcept>
#include <thread>
#include <vector>

#include "chatai/core/metrics.hpp"

using namespace chatai::metrics;

TEST_CASE("counters and gauges with labels render in the text format") {
  registry reg;
  auto& requests = reg.add_counter("chatai_requests_total", "Requests served.", {"route", "code"});
  requests.labels({"/v1/chat/completions", "200"}).inc();
  requests.labels({"/v1/chat/completions", "200"}).inc(2);
  requests.labels({"/v1/models", "404"}).inc();
  auto& inflight = reg.add_gauge("chatai_in_flight", "Requests in flight.");
  inflight.get().add(3);
  inflight.get().sub(1);
  CHECK(reg.expose() ==
        "# HELP chatai_requests_total Requests served.\n"
        "# TYPE chatai_requests_total counter\n"
        "chatai_requests_total{route=\"/v1/chat/completions\",code=\"200\"} 3\n"
        "chatai_requests_total{route=\"/v1/models\",code=\"404\"} 1\n"
        "# HELP chatai_in_flight Requests in flight.\n"
        "# TYPE chatai_in_flight gauge\n"
        "chatai_in_flight 2\n");
}

TEST_CASE("histograms render cumulative buckets, sum and count") {
  registry reg;
  auto& latency = reg.add_histogram("chatai_latency_seconds", "Latency.", {0.1, 0.5, 1}, {"model"});
  auto& h = latency.labels({"m"});
  h.observe(0.05);
  h.observe(0.1);
  h.observe(0.7);
  h.observe(3);
  CHECK(reg.expose() ==
        "# HELP chatai_latency_seconds Latency.\n"
        "# TYPE chatai_latency_seconds histogram\n"
        "chatai_latency_seconds_bucket{model=\"m\",le=\"0.1\"} 2\n"
        "chatai_latency_seconds_bucket{model=\"m\",le=\"0.5\"} 2\n"
        "chatai_latency_seconds_bucket{model=\"m\",le=\"1\"} 3\n"
        "chatai_latency_seconds_bucket{model=\"m\",le=\"+Inf\"} 4\n"
        "chatai_latency_seconds_sum{model=\"m\"} 3.85\n"
        "chatai_latency_seconds_count{model=\"m\"} 4\n");
}

TEST_CASE("label values and help text are escaped") {
  registry reg;
  reg.add_counter("c", "line one\nback\\slash", {"v"}).labels({"a\"b\\c\nd"}).inc();
  CHECK(reg.expose() ==
        "# HELP c line one\\nback\\\\slash\n"
        "# TYPE c counter\n"
        "c{v=\"a\\\"b\\\\c\\nd\"} 1\n");
}

TEST_CASE("registration is idempotent and checked") {
  registry reg;
  auto& a = reg.add_counter("x_total", "X.", {"k"});
  CHECK(&reg.add_counter("x_total", "X.", {"k"}) == &a);
  CHECK_THROWS_AS(reg.add_gauge("x_total", "X."), std::invalid_argument);
  CHECK_THROWS_AS(reg.add_counter("x_total", "X.", {"other"}), std::invalid_argument);
  CHECK_THROWS_AS(reg.add_counter("1bad", "X."), std::invalid_argument);
  CHECK_THROWS_AS(reg.add_counter("ok", "X.", {"__reserved"}), std::invalid_argument);
  CHECK_THROWS_AS(reg.add_histogram("h", "H.", {1, 0.5}), std::invalid_argument);
  CHECK_THROWS_AS(reg.add_histogram("h2", "H.", {1}, {"le"}), std::invalid_argument);
  CHECK_THROWS_AS(a.labels({}), std::invalid_argument);
  CHECK(exponential_buckets(1, 2, 4) == std::vector<double>{1, 2, 4, 8});
}

TEST_CASE("concurrent updates are not lost") {
  registry reg;
  auto& c = reg.add_counter("hits_total", "Hits.").get();
  auto& h = reg.add_histogram("sizes", "Sizes.", {10, 100}).get();
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) {
        c.inc();
        h.observe(i % 200);
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(c.value() == 40000);
  CHECK(h.cumulative_counts().back() == 40000);
}
