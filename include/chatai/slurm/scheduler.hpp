// The autoscaler: one tick reads the job listing once, probes every job in parallel, counts
// demand from the gate's in-flight markers, then submits, rotates, drains or cancels jobs and
// publishes the ready backends in the registry.
//
// The job side: each job gets a random token. Its name is <job_prefix><service>.<token>, its
// secret is keys/<token> (0600; the script gets the path, never the secret), and its server
// binds a free port itself and then writes {"host":...,"port":...} to endpoints/<token>.json
// (write a temporary file and rename it). Template placeholders: {{service}}, {{job_name}},
// {{state_dir}}, {{key_file}}, {{endpoint_file}}, {{model}} (the first served model name).
//
// Crash safety: a tick holds scheduler.lock (an flock, so a killed tick leaves no stale lock)
// and writes scheduler.json and registry.json only by rename. The key of a job is written
// before it is submitted, so a job submitted by a tick that died before recording it is
// found in the listing by its token and adopted; a listed job with the prefix whose token
// has no key is cancelled.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "chatai/core/status.hpp"
#include "chatai/slurm/launcher.hpp"
#include "chatai/slurm/service_config.hpp"

namespace chatai::slurm {

// What the scheduler makes of one job.
//   pending   queued (Slurm PENDING, CONFIGURING, ...)
//   starting  running, not yet ready
//   ready     passed its readiness probe; receives requests
//   draining  receives no new requests; cancelled once it has none in flight
//   stopping  cancelled; kept on record until the listing no longer shows it
enum class job_phase { pending, starting, ready, draining, stopping };

std::string_view to_string(job_phase phase) noexcept;

// One job as the scheduler knows it.
struct job_status {
  std::string job;
  std::string service;
  std::string token;
  launcher_kind launcher = launcher_kind::slurm;
  job_phase phase = job_phase::pending;
  std::string queue_state;  // as the launcher last listed it (PENDING, RUNNING, ...)
  std::string host;         // from the job's endpoint file; empty until written
  std::int64_t port = 0;
  std::optional<std::chrono::seconds> time_left;   // now, extrapolated from the last listing
  std::optional<std::chrono::seconds> time_limit;  // the limit granted
  std::int64_t failed_probes = 0;  // consecutive
  std::string replaced_by;         // the job that takes over when this one is rotated out
  std::int64_t in_flight = 0;
};

struct service_status {
  std::string id;
  launcher_kind launcher = launcher_kind::slurm;
  std::int64_t target = 0;  // instances wanted at the last tick
  std::int64_t instances = 0;  // jobs counted toward the target (pending, starting, ready)
  std::int64_t ready = 0;
  std::int64_t in_flight = 0;
  double demand = 0;       // smoothed requests in flight
  bool listing_known = true;  // false: the last listing failed, nothing was submitted or cancelled
};

// Thread safety: a value type.
struct scheduler_status {
  std::int64_t last_tick_ms = 0;  // Unix time of the last completed tick, 0 when none
  std::vector<service_status> services;
  std::vector<job_status> jobs;
};

// What one tick did.
struct tick_report {
  std::int64_t submitted = 0;
  std::int64_t cancelled = 0;
  std::int64_t adopted = 0;
  std::int64_t rotated = 0;  // replacements submitted for jobs near their time limit
  std::int64_t probes = 0;
  std::vector<std::string> unknown_listings;  // launchers whose listing failed ("slurm", "local")
  std::chrono::milliseconds duration{0};
};

// The scheduler of one deployment. Every tick works from the files of the state directory,
// so ticks may run in different processes one after another.
// Thread safety: tick() and status() may be called from any thread; ticks never overlap,
// even across processes (a second one at the same time fails with errc::unavailable).
class scheduler {
 public:
  // Uses the launchers the config names; `slurm` and `local` replace them (tests).
  explicit scheduler(deployment_config config, std::unique_ptr<launcher> slurm = nullptr,
                     std::unique_ptr<launcher> local = nullptr);
  ~scheduler();
  scheduler(scheduler&&) noexcept;
  scheduler& operator=(scheduler&&) noexcept;

  const deployment_config& config() const noexcept;

  // Creates the state directory's layout and publishes the services in the registry.
  chatai::status init();

  // One round of scheduling. An unreadable listing is reported, never taken for "no jobs".
  result<tick_report> tick();

  // The state recorded by the last tick, without asking Slurm.
  result<scheduler_status> status() const;

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

// The status as one JSON document, and as a table for people.
std::string to_json(const scheduler_status& status);
std::string to_table(const scheduler_status& status);

// A tick report as one JSON object: {"submitted":..., ..., "unknown_listings":[...], "duration_ms":...}.
std::string to_json(const tick_report& report);

}  // namespace chatai::slurm
