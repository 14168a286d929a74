// sbatch / squeue / scancel through run_subprocess.
#include "chatai/slurm/slurm_driver.hpp"

#include "chatai/core/log.hpp"
#include "chatai/core/subprocess.hpp"

namespace chatai::slurm {

namespace {

std::string trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}

// Runs one Slurm command; anything but exit 0 is an error carrying its stderr.
result<std::string> run(const driver_options& options, std::vector<std::string> argv, std::string stdin_data = {}) {
  subprocess_options o;
  o.argv = std::move(argv);
  o.stdin_data = std::move(stdin_data);
  o.env_set = options.env;
  o.timeout = options.timeout;
  const std::string program = o.argv[0];
  auto r = run_subprocess(o);
  if (!r) {
    log::warn("slurm command could not run", {{"command", program}, {"error", r.err().message()}});
    return error(errc::unavailable, program + ": " + r.err().message());
  }
  if (r->timed_out) {
    log::warn("slurm command timed out", {{"command", program}});
    return error(errc::timeout, program + ": timed out after " + std::to_string(options.timeout.count()) + " ms");
  }
  if (r->exit_code != 0) {
    const std::string err = trimmed(r->err);
    log::warn("slurm command failed",
              {{"command", program}, {"exit", std::to_string(r->exit_code)}, {"stderr", err}});
    return error(errc::unavailable, program + " failed (exit " + std::to_string(r->exit_code) + "): " + err);
  }
  return std::move(r->out);
}

bool is_job_id(std::string_view id) {
  if (id.empty() || id.size() > 32) return false;
  for (const char c : id)
    if (!((c >= '0' && c <= '9') || c == '_')) return false;
  return id.front() != '_';
}

}  // namespace

result<std::string> slurm_driver::submit(const submit_request& request) const {
  std::vector<std::string> argv = {options_.sbatch, "--parsable", "--job-name=" + request.job_name,
                                   "--time=" + format_duration(request.time_limit)};
  if (request.time_min) argv.push_back("--time-min=" + format_duration(*request.time_min));
  if (request.signal_lead.count() > 0) argv.push_back("--signal=B:USR1@" + std::to_string(request.signal_lead.count()));
  if (!request.output_path.empty()) argv.push_back("--output=" + request.output_path);
  argv.insert(argv.end(), request.extra_args.begin(), request.extra_args.end());
  auto out = run(options_, std::move(argv), request.script);
  if (!out) return std::move(out).err();
  // --parsable prints "jobid" or "jobid;cluster".
  std::string id = trimmed(*out);
  id = id.substr(0, id.find(';'));
  if (!is_job_id(id)) return error(errc::parse_error, "sbatch printed no job id: \"" + trimmed(*out) + "\"");
  return id;
}

result<std::vector<squeue_job>> slurm_driver::list(std::string_view name_prefix) const {
  auto out = run(options_, {options_.squeue, "--noheader", "--me", "--format=" + std::string(squeue_format())});
  if (!out) return std::move(out).err();
  auto jobs = parse_squeue(*out);
  if (!jobs) return std::move(jobs).err();
  std::erase_if(*jobs, [&](const squeue_job& j) { return j.name.rfind(name_prefix, 0) != 0; });
  return jobs;
}

status slurm_driver::cancel(std::string_view job_id, std::optional<std::string> signal) const {
  if (!is_job_id(job_id)) return error(errc::invalid_argument, "not a job id: \"" + std::string(job_id) + "\"");
  std::vector<std::string> argv = {options_.scancel, "--quiet"};
  if (signal) {
    argv.push_back("--batch");
    argv.push_back("--signal=" + *signal);
  }
  argv.emplace_back(job_id);
  auto out = run(options_, std::move(argv));
  if (!out) return std::move(out).err();
  return {};
}

}  // namespace chatai::slurm
