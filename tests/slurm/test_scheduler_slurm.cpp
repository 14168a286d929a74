// The scheduler on a real single-node Slurm: scaling up under load and back down, a job
// cancelled from outside replaced, slurmctld down during ticks, rotation before the time
// limit with a steady client through the gate, --time-min filling a gap before a
// reservation, and a tick killed with SIGKILL at different points.
#include <doctest/doctest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <mutex>
#include <set>
#include <fstream>
#include <thread>
#include <vector>

#include "../gate/gate_test_util.hpp"
#include "chatai/core/config.hpp"
#include "chatai/core/json.hpp"
#include "chatai/core/subprocess.hpp"
#include "chatai/slurm/slurm_driver.hpp"
#include "scheduler_test_util.hpp"
#include "slurm_cluster.hpp"

using namespace chatai;
using namespace chatai::slurm;
using namespace chatai::slurm::testing;
using namespace std::chrono_literals;

namespace {

std::string slurm_deployment(const slurm_cluster& cluster, const std::string& service_fields,
                             const std::string& id = "chat") {
  return R"({"state_dir": "state", "job_prefix": "ct-", "slurm": {"conf": )" + json::quoted(cluster.conf) +
         R"(, "timeout_ms": 5000}, "services": [{"id": )" + json::quoted(id) + R"(, "models": ["smol"], "requests_per_instance": 1,
    "readiness": {"timeout_ms": 1000}, "health": {"timeout_ms": 1000},
    "template": )" + json::quoted(backend_template()) + ", " + service_fields + "}]}";
}

bool ready_jobs(const scheduler_status& s, std::int64_t n) { return count_phase(s, job_phase::ready) == n; }

int run_command(const std::vector<std::string>& argv, const slurm_cluster& cluster, std::string* out = nullptr) {
  subprocess_options o;
  o.argv = argv;
  o.env_set["SLURM_CONF"] = cluster.conf;
  o.timeout = 30s;
  auto r = run_subprocess(o);
  if (!r) return -1;
  if (out) *out = r->out + r->err;
  return r->exit_code;
}

}  // namespace

TEST_CASE("on a real Slurm: scale up and down, replace a cancelled job, survive slurmctld going away") {
  slurm_cluster cluster;
  deployment_dir d;
  scheduler sched(d.write(slurm_deployment(cluster, R"("min_instances": 1, "max_instances": 2, "time_limit": "10:00")")));
  REQUIRE(sched.init());
  const state_dir dir(d.state());

  REQUIRE(tick_until(sched, [](const scheduler_status& s) { return ready_jobs(s, 1); }, 60s));
  auto st = sched.status();
  const auto first = st->jobs[0];
  CHECK(first.queue_state == "RUNNING");
  REQUIRE(first.time_limit);
  CHECK(*first.time_limit == 10min);
  auto reg = read_registry(dir);
  REQUIRE(reg->backends.size() == 1);
  CHECK(reg->backends[0].job == first.job);
  CHECK(reg->backends[0].host == "127.0.0.1");
  auto answer = ask_backend(dir, reg->backends[0]);
  REQUIRE(answer);
  CHECK(answer->status == 200);
  // The secret is on no command line (sbatch, the job, the server).
  CHECK_FALSE(on_some_command_line(*read_job_key(dir, first.token)));

  // Two requests in flight at one per instance: a second job.
  {
    std::vector<inflight_marker> load;
    for (int i = 0; i < 2; ++i) load.push_back(std::move(*inflight_marker::create(dir, "chat")));
    REQUIRE(tick_until(sched, [](const scheduler_status& s) { return ready_jobs(s, 2); }, 60s));
  }
  // Back to one once the load is gone: the extra job drains, then leaves Slurm's queue.
  REQUIRE(tick_until(sched, [](const scheduler_status& s) { return s.jobs.size() == 1 && ready_jobs(s, 1); }, 60s));

  // Cancelled from outside: replaced.
  const std::string victim = sched.status()->jobs[0].job;
  REQUIRE(run_command({"scancel", victim}, cluster) == 0);
  REQUIRE(tick_until(sched, [&](const scheduler_status& s) {
    return s.jobs.size() == 1 && ready_jobs(s, 1) && s.jobs[0].job != victim;
  }, 60s));
  const std::string survivor = sched.status()->jobs[0].job;

  // slurmctld goes away: ticks know nothing, drop nothing, submit nothing.
  const auto pid = std::stol(*config::read_file(cluster.dir / "slurmctld.pid"));
  REQUIRE(::kill(static_cast<pid_t>(pid), SIGTERM) == 0);
  REQUIRE(wait_for([&] { return ::kill(static_cast<pid_t>(pid), 0) != 0; }, 20s));
  for (int i = 0; i < 2; ++i) {
    auto blind = sched.tick();
    REQUIRE(blind);
    CHECK(blind->unknown_listings == std::vector<std::string>{"slurm"});
    CHECK(blind->submitted == 0);
    CHECK(blind->cancelled == 0);
  }
  st = sched.status();
  REQUIRE(st->jobs.size() == 1);
  CHECK(st->jobs[0].job == survivor);
  CHECK(st->jobs[0].phase == job_phase::ready);  // its server still answers its probes
  CHECK_FALSE(st->services[0].listing_known);
  CHECK(read_registry(dir)->backends.size() == 1);

  // Back with its saved state: the same job carries on.
  REQUIRE(run_command({"slurmctld"}, cluster) == 0);
  REQUIRE(tick_until(sched, [&](const scheduler_status& s) { return s.services[0].listing_known; }, 60s));
  st = sched.status();
  REQUIRE(st->jobs.size() == 1);
  CHECK(st->jobs[0].job == survivor);
  CHECK(st->jobs[0].phase == job_phase::ready);
}

TEST_CASE("on a real Slurm: rotation before the time limit without a failed request, and --time-min in a gap") {
  slurm_cluster cluster;
  deployment_dir d;
  // Two-minute jobs, replaced one minute before their end.
  scheduler sched(d.write(slurm_deployment(
      cluster, R"("min_instances": 1, "max_instances": 1, "time_limit": "2:00", "rotation_lead": 60)")));
  REQUIRE(sched.init());
  const state_dir dir(d.state());
  REQUIRE(tick_until(sched, [](const scheduler_status& s) { return ready_jobs(s, 1); }, 60s));

  gate::gate_config gate_cfg;
  gate_cfg.state_dir = d.state();
  gate_cfg.connect_timeout = 2s;
  gate_cfg.first_byte_timeout = 10s;
  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, failed{0};
  std::set<std::string> served_by;
  std::mutex served_mutex;
  std::thread client([&] {
    const std::string body = R"({"model":"smol","messages":[{"role":"user","content":"hi"}]})";
    while (!stop) {
      auto r = gate::testing::run_verb(gate_cfg, gate::verb::request, gate::testing::chat_request(body));
      if (gate::testing::status_of(r.out) == 200) {
        ++ok;
        const auto at = r.out.find("hello from ");
        if (at != std::string::npos) {
          std::lock_guard lock(served_mutex);
          served_by.insert(r.out.substr(at + 11, r.out.find('"', at) - at - 11));
        }
      } else {
        ++failed;
        MESSAGE("failed request: " << r.out.substr(0, 200));
      }
      std::this_thread::sleep_for(100ms);
    }
  });

  // Two rotations: three distinct jobs in turn, each replaced before its limit.
  std::set<std::string> jobs_seen;
  std::int64_t rotations = 0;
  const auto end = std::chrono::steady_clock::now() + 4min;
  while (std::chrono::steady_clock::now() < end && rotations < 2) {
    auto report = sched.tick();
    if (report) rotations += report->rotated;
    auto st = sched.status();
    for (const auto& j : st->jobs) jobs_seen.insert(j.job);
    std::this_thread::sleep_for(1s);
  }
  CHECK(rotations == 2);
  // The second replacement takes over, and the second job drains and stops.
  REQUIRE(tick_until(sched, [](const scheduler_status& s) { return s.jobs.size() == 1 && ready_jobs(s, 1); }, 60s));
  std::this_thread::sleep_for(2s);
  stop = true;
  client.join();
  CHECK(failed == 0);
  CHECK(ok > 100);
  CHECK(jobs_seen.size() == 3);
  {
    std::lock_guard lock(served_mutex);
    CHECK(served_by.size() == 3);
  }

  // A reservation of the node in five minutes for someone else: a job that asks for 10
  // minutes but accepts 2 starts now in the gap, and its remaining time is the granted one.
  auto gap = scheduler(d.write(slurm_deployment(
      cluster, R"("min_instances": 1, "max_instances": 1, "time_limit": "10:00", "time_min": "2:00", "rotation_lead": 60)", "gap")));
  std::string out;
  REQUIRE_MESSAGE(run_command({"scontrol", "create", "reservation", "ReservationName=gap", "StartTime=now+5minutes",
                               "Duration=30", "Nodes=ALL", "Users=nobody", "Flags=IGNORE_JOBS"},
                              cluster, &out) == 0,
                  out);
  REQUIRE(tick_until(gap, [](const scheduler_status& s) {
    return ready_jobs(s, 1) && s.jobs.size() == 1;
  }, 90s));
  const auto job = gap.status()->jobs[0];
  REQUIRE(job.time_limit);
  MESSAGE("granted " << job.time_limit->count() << " s of the 600 s asked for");
  CHECK(*job.time_limit >= 2min);
  CHECK(*job.time_limit <= 5min);
  REQUIRE(job.time_left);
  CHECK(*job.time_left <= 5min);
}

// Polls `pred` for up to 30 seconds.
template <class Pred>
bool tick_free_wait(Pred pred) {
  for (int i = 0; i < 150; ++i) {
    if (pred()) return true;
    std::this_thread::sleep_for(200ms);
  }
  return pred();
}

TEST_CASE("on a real Slurm: a tick killed with SIGKILL at any point leaves a state the next tick completes") {
  slurm_cluster cluster;
  driver_options slurm;
  slurm.env["SLURM_CONF"] = cluster.conf;
  const slurm_driver driver(slurm);
  // The jobs of the prefix that Slurm still runs or queues.
  auto live_jobs = [&] {
    auto jobs = driver.list("ct-");
    REQUIRE(jobs);
    std::vector<std::string> ids;
    for (const auto& j : *jobs)
      if (j.state == "PENDING" || j.state == "RUNNING" || j.state == "CONFIGURING") ids.push_back(j.job_id);
    return ids;
  };
  // sbatch is Slurm's own, run through a wrapper that waits 200 ms first, so that the kill
  // points fall before the listing, between submissions and after the last one.
  std::set<std::size_t> submitted_before_kill;
  for (const int delay_ms : {50, 320, 520, 900}) {
    CAPTURE(delay_ms);
    for (const auto& id : live_jobs()) REQUIRE(driver.cancel(id));
    REQUIRE(tick_free_wait([&] { return live_jobs().empty(); }));
    deployment_dir d;
    std::ofstream(d.path / "slow-sbatch") << "#!/bin/sh\nsleep 0.2\nexec sbatch \"$@\"\n";
    fs::permissions(d.path / "slow-sbatch", fs::perms::owner_all);
    std::string cfg = slurm_deployment(cluster, R"("min_instances": 3, "max_instances": 3, "time_limit": "10:00")");
    const std::string timeout = R"("timeout_ms": 5000)";
    cfg.replace(cfg.find(timeout), timeout.size(), timeout + R"(, "sbatch": "./slow-sbatch")");
    scheduler sched(d.write(cfg));
    REQUIRE(sched.init());
    const pid_t child = ::fork();
    if (child == 0) {
      (void)sched.tick();
      ::_exit(0);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
    ::kill(child, SIGKILL);
    ::waitpid(child, nullptr, 0);
    // An sbatch the killed tick had started finishes on its own: let it land first.
    std::this_thread::sleep_for(600ms);
    const std::size_t orphans = live_jobs().size();
    submitted_before_kill.insert(orphans);

    // The next tick runs (the killed one's lock went with it) and reaches the target: what the
    // killed tick submitted is kept (adopted unless it was already recorded), nothing twice.
    auto next = sched.tick();
    REQUIRE_MESSAGE(next, (next ? "" : next.err().message()));
    CHECK(next->adopted <= static_cast<std::int64_t>(orphans));
    CHECK(next->submitted == 3 - static_cast<std::int64_t>(orphans));
    CHECK(next->cancelled == 0);
    auto st = sched.status();
    REQUIRE(st);
    CHECK(st->jobs.size() == 3);
    CHECK(live_jobs().size() == 3);
    CHECK(read_registry(state_dir(d.state())));
    // A further tick changes nothing.
    auto again = sched.tick();
    REQUIRE(again);
    CHECK(again->submitted == 0);
    CHECK(again->cancelled == 0);
    CHECK(live_jobs().size() == 3);
  }
  // The kills fell at different points of the tick, at least one between two submissions.
  CHECK(submitted_before_kill.size() >= 3);
  CHECK((submitted_before_kill.count(1) + submitted_before_kill.count(2)) >= 1);
  for (const auto& id : live_jobs()) CHECK(driver.cancel(id));
}
