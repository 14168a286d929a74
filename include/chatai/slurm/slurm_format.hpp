// Slurm's text formats: durations as squeue prints them and sbatch reads them, host lists
// ("gpu[01-03,07]"), and squeue lines in the machine-parsable format the adapter asks for.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "chatai/core/status.hpp"

namespace chatai::slurm {

// A duration from Slurm: a number of seconds, UNLIMITED, or INVALID / NOT_SET (not known).
struct slurm_duration {
  enum class kind { finite, unlimited, unknown };
  kind what = kind::unknown;
  std::chrono::seconds value{0};

  static slurm_duration finite(std::chrono::seconds s) { return {kind::finite, s}; }
  static slurm_duration unlimited() { return {kind::unlimited, {}}; }
  static slurm_duration unknown() { return {kind::unknown, {}}; }
};

// Parses every form Slurm prints or accepts: "SS" is not one of them; "MM" (minutes),
// "MM:SS", "HH:MM:SS", "D-HH", "D-HH:MM", "D-HH:MM:SS", "UNLIMITED", "INFINITE",
// "INVALID", "NOT_SET", "N/A". Anything else is an error naming the text.
result<slurm_duration> parse_duration(std::string_view text);

// The sbatch --time form "D-HH:MM:SS" (or "HH:MM:SS" under a day).
std::string format_duration(std::chrono::seconds s);

// Expands a Slurm host list ("gpu[01-03,07],cpu1", also several bracket groups in one name)
// into host names, in order. At most `max_hosts` names; more is an error.
result<std::vector<std::string>> expand_hostlist(std::string_view list, std::size_t max_hosts = 4096);

// One job as squeue reports it with squeue_format().
struct squeue_job {
  std::string job_id;
  std::string name;
  std::string state;       // PENDING, RUNNING, COMPLETING, ...
  slurm_duration time_left;
  slurm_duration time_limit;  // the limit Slurm granted (may be below the requested --time)
  std::vector<std::string> nodes;
  std::string reason;
};

// The --format argument whose output parse_squeue() reads.
std::string_view squeue_format();

// Parses squeue output (one job per line, no header). A malformed line is an error naming
// the line: the caller treats the whole listing as unknown, never as "no jobs".
result<std::vector<squeue_job>> parse_squeue(std::string_view output);

}  // namespace chatai::slurm
