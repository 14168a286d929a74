// `chatai gateway --config FILE [--port-file F]`: the web-facing service. It prints
// {"event":"listening","url":...,"port":...} once it listens; SIGINT or SIGTERM stops it cleanly
// (streams in flight end, the usage still queued is written).
#include <signal.h>

#include <cstdio>
#include <memory>
#include <string>

#include "chatai/core/json.hpp"
#include "chatai/core/log.hpp"
#include "chatai/gateway/gateway.hpp"
#include "chatai/slurm/registry.hpp"
#include "commands.hpp"

namespace chatai::cli {

namespace {

int run_gateway(const std::string& config_path, const std::string& port_file) {
  auto config = gateway::load_config(config_path);
  if (!config) {
    std::fprintf(stderr, "chatai gateway: %s\n", config.err().message().c_str());
    return 2;
  }
  // Blocked before any thread starts, so only sigwait below takes them.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);

  auto gw = gateway::gateway::create(std::move(*config));
  if (!gw) {
    std::fprintf(stderr, "chatai gateway: %s\n", gw.err().message().c_str());
    return 1;
  }
  if (auto st = (*gw)->start(); !st) {
    std::fprintf(stderr, "chatai gateway: %s\n", st.err().message().c_str());
    return 1;
  }
  if (!port_file.empty()) {
    if (auto st = slurm::replace_file_atomically(port_file, std::to_string((*gw)->port()) + "\n"); !st) {
      std::fprintf(stderr, "chatai gateway: --port-file: %s\n", st.err().message().c_str());
      return 1;
    }
  }
  std::string line = "{\"event\":\"listening\",\"url\":";
  json::append_quoted(line, (*gw)->url());
  line += ",\"port\":" + std::to_string((*gw)->port()) + "}\n";
  std::fputs(line.c_str(), stdout);
  std::fflush(stdout);

  int sig = 0;
  sigwait(&set, &sig);
  log::info("gateway: signal received, stopping", {{"signal", sig == SIGINT ? "SIGINT" : "SIGTERM"}});
  (*gw)->stop();
  log::info("gateway: stopped");
  return 0;
}

}  // namespace

void add_gateway_command(CLI::App& app, int& exit_code) {
  struct options {
    std::string config;
    std::string port_file;
  };
  auto opts = std::make_shared<options>();
  auto* cmd = app.add_subcommand("gateway", "the web-facing OpenAI API: keys, limits, accounting, the chat page");
  cmd->add_option("--config", opts->config, "the gateway's config file (JSON)")->required()->check(CLI::ExistingFile);
  cmd->add_option("--port-file", opts->port_file, "once listening, write the bound port here");
  cmd->callback([opts, &exit_code] { exit_code = run_gateway(opts->config, opts->port_file); });
}

}  // namespace chatai::cli
