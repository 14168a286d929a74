// Duration of a scheduler tick for 50 services with 10 jobs each (500 jobs), all running and
// ready: a recorded squeue listing stands in for Slurm, every job's endpoint is one local
// HTTP server, so the tick does its whole work (listing, 500 health probes, demand, registry).
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "chatai/core/http_server.hpp"
#include "chatai/core/log.hpp"
#include "chatai/slurm/registry.hpp"
#include "chatai/slurm/scheduler.hpp"

namespace fs = std::filesystem;
using namespace chatai;

int main(int argc, char** argv) {
  const int services = argc > 1 ? std::atoi(argv[1]) : 50;
  const int per_service = argc > 2 ? std::atoi(argv[2]) : 10;
  const int ticks = argc > 3 ? std::atoi(argv[3]) : 10;
  log::set_level(log::level::warn);

  http::router routes;
  routes.add("GET", "/health", [](http::request&, http::response res) { res.send(200, "application/json", "{}"); });
  http::server_options options;
  options.io_threads = 2;
  auto srv = http::server::start(options, std::move(routes));
  if (!srv) {
    std::fprintf(stderr, "%s\n", srv.err().message().c_str());
    return 1;
  }

  const fs::path dir = fs::temp_directory_path() / ("chatai-tick-bench-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  // sbatch prints increasing ids and records each name; squeue prints the recorded listing.
  std::ofstream(dir / "sbatch") << "#!/bin/sh\nn=$(cat " << (dir / "next").string() << " 2>/dev/null || echo 1000)\n"
                                << "echo $((n + 1)) > " << (dir / "next").string() << "\n"
                                << "for a; do case $a in --job-name=*) echo \"$n|${a#--job-name=}\" >> "
                                << (dir / "names").string() << ";; esac; done\ncat >/dev/null\necho $n\n";
  std::ofstream(dir / "squeue") << "#!/bin/sh\ncat " << (dir / "squeue.out").string() << "\n";
  std::ofstream(dir / "scancel") << "#!/bin/sh\n";
  std::ofstream(dir / "squeue.out");
  for (const char* p : {"sbatch", "squeue", "scancel"}) fs::permissions(dir / p, fs::perms::owner_all);

  std::string cfg = R"({"state_dir": "state", "job_prefix": "b-", "slurm": {"sbatch": "./sbatch", "squeue": "./squeue", "scancel": "./scancel"}, "services": [)";
  for (int s = 0; s < services; ++s) {
    if (s) cfg += ',';
    cfg += R"({"id": "svc)" + std::to_string(s) + R"(", "models": ["m)" + std::to_string(s) +
           R"("], "min_instances": )" + std::to_string(per_service) + R"(, "max_instances": )" +
           std::to_string(per_service) + R"(, "time_limit": "1-00:00:00", "template": "#!/bin/sh\nsleep 1\n"})";
  }
  cfg += "]}";
  std::ofstream(dir / "deploy.json") << cfg;
  auto config = slurm::load_deployment(dir / "deploy.json");
  if (!config) {
    std::fprintf(stderr, "%s\n", config.err().message().c_str());
    return 1;
  }
  slurm::scheduler sched(std::move(*config));
  auto first = sched.tick();  // submits every job
  if (!first) {
    std::fprintf(stderr, "%s\n", first.err().message().c_str());
    return 1;
  }
  std::printf("first tick: %lld jobs submitted in %lld ms\n", static_cast<long long>(first->submitted),
              static_cast<long long>(first->duration.count()));

  // The recorded listing: every job running with 20 hours left; every endpoint the local server.
  std::ifstream names(dir / "names");
  std::ofstream listing(dir / "squeue.out");
  std::string line;
  const slurm::state_dir state(dir / "state");
  while (std::getline(names, line)) {
    const auto bar = line.find('|');
    const std::string name = line.substr(bar + 1);
    listing << line.substr(0, bar) << '|' << name << "|RUNNING|20:00:00|1-00:00:00|gpu[01-04]|None\n";
    std::ofstream(state.endpoints_dir() / (name.substr(name.rfind('.') + 1) + ".json"))
        << "{\"host\":\"127.0.0.1\",\"port\":" << (*srv)->port() << "}";
  }
  listing.close();

  std::vector<double> ms;
  long long probes = 0;
  for (int i = 0; i < ticks + 1; ++i) {
    auto r = sched.tick();
    if (!r) {
      std::fprintf(stderr, "%s\n", r.err().message().c_str());
      return 1;
    }
    if (i > 0) ms.push_back(static_cast<double>(r->duration.count()));  // the first one marks jobs ready
    probes = r->probes;
  }
  std::sort(ms.begin(), ms.end());
  double sum = 0;
  for (double v : ms) sum += v;
  auto st = sched.status();
  std::printf("%d services, %zu jobs (%lld probed per tick): tick mean %.1f ms, median %.1f ms, max %.1f ms over %d ticks\n",
              services, st->jobs.size(), probes, sum / static_cast<double>(ms.size()), ms[ms.size() / 2], ms.back(), ticks);
  (*srv)->stop(std::chrono::seconds(1));
  std::error_code ec;
  fs::remove_all(dir, ec);
  return 0;
}
