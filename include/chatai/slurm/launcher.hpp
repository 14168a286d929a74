// Where a service's jobs run: Slurm jobs (sbatch/squeue/scancel) or local processes with
// the same time limits, signals and listing, behind one interface for the scheduler.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "chatai/core/status.hpp"
#include "chatai/slurm/slurm_driver.hpp"
#include "chatai/slurm/slurm_format.hpp"

namespace chatai::slurm {

// Starts, lists and stops the jobs of one deployment. A failed list() means the state of the
// jobs is unknown, never that there are none.
// Thread safety: implementations may be called from one thread at a time.
class launcher {
 public:
  virtual ~launcher() = default;

  // Starts a job running request.script; returns its id.
  virtual result<std::string> submit(const submit_request& request) = 0;
  // The jobs whose names start with `name_prefix`, as squeue would report them.
  virtual result<std::vector<squeue_job>> list(std::string_view name_prefix) = 0;
  // Stops a job, or sends it `signal` ("USR1") instead.
  virtual status cancel(std::string_view job_id, std::optional<std::string> signal = std::nullopt) = 0;
};

// Jobs on Slurm.
// Thread safety: as launcher.
class slurm_launcher final : public launcher {
 public:
  explicit slurm_launcher(driver_options options) : driver_(std::move(options)) {}

  result<std::string> submit(const submit_request& request) override { return driver_.submit(request); }
  result<std::vector<squeue_job>> list(std::string_view name_prefix) override { return driver_.list(name_prefix); }
  status cancel(std::string_view job_id, std::optional<std::string> signal) override {
    return driver_.cancel(job_id, std::move(signal));
  }

 private:
  slurm_driver driver_;
};

// Jobs as local processes: each runs `sh SCRIPT` in its own session under a small shell
// supervisor that sends SIGUSR1 `signal_lead` before the time limit (as Slurm's
// --signal=B:USR1@lead does), SIGTERM to the whole session at the limit and SIGKILL 5 s later.
// A record per job under `dir` (script, log, pid and start time) lets any later process list
// and stop the jobs; the jobs outlive the process that started them. time_min is ignored: a
// local job is always granted its full time limit.
// Thread safety: as launcher; several processes may use one folder, one at a time.
class local_launcher final : public launcher {
 public:
  explicit local_launcher(std::filesystem::path dir) : dir_(std::move(dir)) {}

  result<std::string> submit(const submit_request& request) override;
  result<std::vector<squeue_job>> list(std::string_view name_prefix) override;
  status cancel(std::string_view job_id, std::optional<std::string> signal) override;

 private:
  std::filesystem::path dir_;
};

}  // namespace chatai::slurm
