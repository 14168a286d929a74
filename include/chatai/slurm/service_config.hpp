// The deployment configuration of the Slurm adapter: the state directory, how to reach
// Slurm, and each service with its job template, scaling bounds, time limits and probes.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "chatai/core/status.hpp"

namespace chatai::slurm {

enum class launcher_kind { slurm, local };

struct probe_settings {
  std::string path = "/health";
  std::chrono::milliseconds timeout{2000};
  std::int64_t failures_before_unhealthy = 3;  // consecutive failed probes
};

struct service_config {
  std::string id;
  std::vector<std::string> models;  // served model names
  // The batch script with placeholders {{service}}, {{job_name}}, {{state_dir}}, {{key_file}},
  // {{endpoint_file}}, {{model}}: a file (template_file) or inline text (template).
  std::string job_template;
  std::vector<std::string> sbatch_args;  // resources: --gres=gpu:1, --partition=..., --cpus-per-task=...
  std::int64_t min_instances = 0;
  std::int64_t max_instances = 1;
  std::int64_t requests_per_instance = 8;
  std::chrono::seconds time_limit{3600};
  std::chrono::seconds time_min{0};  // 0: no --time-min
  std::chrono::seconds rotation_lead{300};
  std::chrono::seconds idle_before_zero{900};
  std::chrono::seconds start_timeout{900};  // a job not ready by then is replaced
  probe_settings readiness;
  probe_settings health;
  launcher_kind launcher = launcher_kind::slurm;
};

struct deployment_config {
  std::filesystem::path state_dir;
  std::string job_prefix = "chatai-";
  std::map<std::string, std::string> slurm_env;  // e.g. SLURM_CONF
  std::string sbatch = "sbatch";                  // the Slurm programs: names looked up in PATH, or paths
  std::string squeue = "squeue";
  std::string scancel = "scancel";
  std::chrono::milliseconds slurm_timeout{20000};
  double demand_smoothing = 0.5;  // weight of the newest demand sample
  std::vector<service_config> services;
};

// Loads and checks a deployment file. Errors name the file and the field:
// "deploy.json: field 'services[1].max_instances': must be at least min_instances (2)".
result<deployment_config> load_deployment(const std::filesystem::path& path);
result<deployment_config> parse_deployment(std::string_view text, const std::string& name,
                                           const std::filesystem::path& base_dir);

}  // namespace chatai::slurm
