// The Slurm commands the adapter uses: sbatch, squeue and scancel, run with a fixed argv and
// a deadline. A failed or timed-out command is an error ("unknown"), never an empty answer.
#pragma once

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "chatai/core/status.hpp"
#include "chatai/slurm/slurm_format.hpp"

namespace chatai::slurm {

struct driver_options {
  std::string sbatch = "sbatch";
  std::string squeue = "squeue";
  std::string scancel = "scancel";
  std::map<std::string, std::string> env;  // e.g. SLURM_CONF for a test cluster
  std::chrono::milliseconds timeout{20000};
};

struct submit_request {
  std::string job_name;                      // the service's prefix and id; checked by the caller
  std::string script;                        // the batch script, passed on stdin (never argv)
  std::chrono::seconds time_limit{3600};     // --time
  std::optional<std::chrono::seconds> time_min;  // --time-min: lets backfill start the job in a gap
  std::chrono::seconds signal_lead{0};       // --signal=B:USR1@lead when non-zero
  std::string output_path;                   // --output; empty: Slurm's default
  std::vector<std::string> extra_args;       // resources (--gres, --partition, ...), from the config
};

// Thread safety: const methods may be called from any thread.
class slurm_driver {
 public:
  explicit slurm_driver(driver_options options) : options_(std::move(options)) {}

  // Submits a job and returns its id.
  result<std::string> submit(const submit_request& request) const;

  // The current user's jobs whose names start with `name_prefix`. An error means the state
  // of the queue is unknown.
  result<std::vector<squeue_job>> list(std::string_view name_prefix) const;

  // Cancels a job, or sends it a signal (e.g. "USR1") instead when `signal` is given.
  status cancel(std::string_view job_id, std::optional<std::string> signal = std::nullopt) const;

 private:
  driver_options options_;
};

}  // namespace chatai::slurm
