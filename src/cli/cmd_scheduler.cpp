// `chatai scheduler --config FILE init|tick|status [--json]`: the Slurm adapter's autoscaler
// from the command line; `tick` is what the gate's keep-alive runs.
#include <cstdio>
#include <memory>
#include <string>

#include "chatai/slurm/scheduler.hpp"
#include "commands.hpp"

namespace chatai::cli {

namespace {

constexpr int exit_busy = 75;  // EX_TEMPFAIL: another tick holds the lock

int run_scheduler(const std::string& config_path, const std::string& action, bool json) {
  auto config = slurm::load_deployment(config_path);
  if (!config) {
    std::fprintf(stderr, "chatai scheduler: %s\n", config.err().message().c_str());
    return 2;
  }
  slurm::scheduler sched(std::move(*config));
  if (action == "init") {
    if (auto st = sched.init(); !st) {
      std::fprintf(stderr, "chatai scheduler init: %s\n", st.err().message().c_str());
      return 1;
    }
    return 0;
  }
  if (action == "tick") {
    auto report = sched.tick();
    if (!report) {
      std::fprintf(stderr, "chatai scheduler tick: %s\n", report.err().message().c_str());
      return report.err().code() == errc::unavailable ? exit_busy : 1;
    }
    if (json) std::printf("%s\n", slurm::to_json(*report).c_str());
    // A tick that could not list the jobs did nothing it could regret, but it did not finish its work.
    return report->unknown_listings.empty() ? 0 : 3;
  }
  auto st = sched.status();
  if (!st) {
    std::fprintf(stderr, "chatai scheduler status: %s\n", st.err().message().c_str());
    return 1;
  }
  const std::string text = json ? slurm::to_json(*st) + "\n" : slurm::to_table(*st);
  std::fputs(text.c_str(), stdout);
  return 0;
}

}  // namespace

void add_scheduler_command(CLI::App& app, int& exit_code) {
  struct options {
    std::string config;
    std::string action;
    bool json = false;
  };
  auto opts = std::make_shared<options>();
  auto* cmd = app.add_subcommand("scheduler", "the Slurm adapter: create the state, run one tick, or show the status");
  cmd->add_option("--config", opts->config, "the deployment file (JSON)")->required();
  cmd->add_option("action", opts->action, "init, tick or status")->required()->check(CLI::IsMember({"init", "tick", "status"}));
  cmd->add_flag("--json", opts->json, "print JSON instead of a table (status) or nothing (tick)");
  cmd->callback([opts, &exit_code] { exit_code = run_scheduler(opts->config, opts->action, opts->json); });
}

}  // namespace chatai::cli
