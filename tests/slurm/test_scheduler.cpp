// The scheduler with the local launcher and with stand-ins for the Slurm commands: scaling on
// demand, scale to zero and start on request, replacement of a killed job, a failed listing
// taken as unknown, adoption and cancellation of jobs missing from the record.
#include <doctest/doctest.h>

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <sstream>

#include <fstream>
#include <optional>
#include <vector>

#include "chatai/core/config.hpp"
#include "chatai/slurm/launcher.hpp"
#include "scheduler_test_util.hpp"
#include "slurm_cluster.hpp"

using namespace chatai;
using namespace chatai::slurm;
using namespace chatai::slurm::testing;
using namespace std::chrono_literals;

namespace {

std::string local_deployment(const std::string& service_fields) {
  return R"({"state_dir": "state", "job_prefix": "t-", "demand_smoothing": 0.5, "services": [{
    "id": "echo", "models": ["m"], "launcher": "local", "requests_per_instance": 2,
    "time_limit": 600, "rotation_lead": 30,
    "readiness": {"timeout_ms": 500}, "health": {"timeout_ms": 500, "failures_before_unhealthy": 2},
    "template": )" + json::quoted(backend_template()) + ", " + service_fields + "}]}";
}

// Stand-ins for sbatch, squeue and scancel driven by files in `dir`: sbatch prints the next
// id and records the job's name, squeue prints squeue.out (or fails when squeue.fail exists),
// scancel appends its arguments to scancel.log.
struct fake_slurm {
  fs::path dir;
  explicit fake_slurm(fs::path d) : dir(std::move(d)) {
    fs::create_directories(dir);
    write("sbatch", "#!/bin/sh\nn=$(cat " + (dir / "next").string() + " 2>/dev/null || echo 100)\n"
          "echo $((n + 1)) > " + (dir / "next").string() + "\nfor a; do case $a in --job-name=*) echo \"$n ${a#--job-name=}\" >> " +
          (dir / "sbatch.log").string() + ";; esac; done\ncat > /dev/null\necho $n\n");
    write("squeue", "#!/bin/sh\nif [ -e " + (dir / "squeue.fail").string() + " ]; then echo 'slurm_load_jobs error: Unable to contact slurm controller' >&2; exit 1; fi\ncat " +
          (dir / "squeue.out").string() + "\n");
    write("scancel", "#!/bin/sh\necho \"$@\" >> " + (dir / "scancel.log").string() + "\n");
    std::ofstream(dir / "squeue.out");
  }
  void write(const std::string& name, const std::string& text) const {
    std::ofstream(dir / name) << text;
    fs::permissions(dir / name, fs::perms::owner_all);
  }
  std::string read(const std::string& name) const {
    auto t = config::read_file(dir / name);
    return t ? *t : std::string();
  }
};

}  // namespace

TEST_CASE("the local launcher runs, lists, signals, limits and stops jobs") {
  deployment_dir d;
  local_launcher launcher(d.path / "local");
  submit_request req;
  req.job_name = "t-job";
  req.script = "trap 'touch " + (d.path / "usr1").string() + "' USR1\nwhile true; do sleep 0.1; done\n";
  req.time_limit = 3s;
  req.signal_lead = 2s;
  auto id = launcher.submit(req);
  REQUIRE(id);
  CHECK(wait_for([&] {
    auto l = launcher.list("t-");
    return l && l->size() == 1 && (*l)[0].state == "RUNNING";
  }, 5s));
  auto listed = launcher.list("t-");
  REQUIRE(listed);
  CHECK((*listed)[0].job_id == *id);
  CHECK((*listed)[0].time_limit.value == 3s);
  CHECK(launcher.list("other-")->empty());
  // SIGUSR1 a second after the start (lead 2 s before the 3 s limit), the end at the limit.
  CHECK(wait_for([&] { return fs::exists(d.path / "usr1"); }, 3s));
  CHECK(wait_for([&] { return launcher.list("t-")->empty(); }, 6s));

  req.time_limit = 60s;
  auto second = launcher.submit(req);
  REQUIRE(second);
  CHECK(wait_for([&] { return launcher.list("t-")->size() == 1; }, 5s));
  CHECK(launcher.cancel(*second, std::nullopt));
  CHECK(wait_for([&] { return launcher.list("t-")->empty(); }, 5s));
  CHECK(launcher.cancel("12;x", std::nullopt).err().code() == errc::invalid_argument);
}

TEST_CASE("local jobs scale with demand, are replaced when killed and scale to zero") {
  deployment_dir d;
  scheduler sched(d.write(local_deployment(R"("min_instances": 0, "max_instances": 3, "idle_before_zero": 3)")));
  REQUIRE(sched.init());
  const state_dir dir(d.state());
  auto reg = read_registry(dir);
  REQUIRE(reg);
  REQUIRE(reg->services.size() == 1);
  CHECK(reg->services[0].can_scale_from_zero);

  // Nothing runs until a request asks for the service.
  REQUIRE(sched.tick());
  CHECK(sched.status()->jobs.empty());
  REQUIRE(request_start(dir, "echo"));
  REQUIRE(sched.tick());
  // Submitted but without an endpoint yet: counted as pending, not offered to the gate.
  reg = read_registry(dir);
  REQUIRE(reg);
  CHECK(reg->services[0].pending == 1);
  CHECK(reg->backends.empty());
  REQUIRE(tick_until(sched, [](const scheduler_status& s) { return count_phase(s, job_phase::ready) == 1; }, 20s));
  reg = read_registry(dir);
  REQUIRE(reg);
  CHECK(reg->services[0].pending == 0);

  // The job's key is private, and the backend in the registry answers with it.
  auto st = sched.status();
  REQUIRE(st->jobs.size() == 1);
  struct stat info{};
  REQUIRE(::stat((dir.keys_dir() / st->jobs[0].token).c_str(), &info) == 0);
  CHECK((info.st_mode & 0777) == 0600);
  reg = read_registry(dir);
  REQUIRE(reg->backends.size() == 1);
  CHECK(reg->backends[0].host == "127.0.0.1");
  CHECK(reg->backends[0].state == backend_state::ready);
  auto answer = ask_backend(dir, reg->backends[0]);
  REQUIRE(answer);
  CHECK(answer->status == 200);

  // Five requests in flight at two per instance: three instances, the maximum.
  {
    std::vector<inflight_marker> load;
    for (int i = 0; i < 5; ++i) load.push_back(std::move(*inflight_marker::create(dir, "echo")));
    REQUIRE(tick_until(sched, [](const scheduler_status& s) { return count_phase(s, job_phase::ready) == 3; }, 20s));
    CHECK(sched.status()->services[0].target == 3);
  }

  // Demand gone: back down by draining, then to zero after the idle time.
  REQUIRE(tick_until(sched, [](const scheduler_status& s) { return s.jobs.empty(); }, 40s));
  CHECK(read_registry(dir)->backends.empty());

  // A job killed from outside is replaced.
  auto sched2 = scheduler(d.write(local_deployment(R"("min_instances": 1, "max_instances": 1)")));
  REQUIRE(tick_until(sched2, [](const scheduler_status& s) { return count_phase(s, job_phase::ready) == 1; }, 20s));
  const std::string first = sched2.status()->jobs[0].job;
  CHECK(local_launcher(dir.local_jobs_dir()).cancel(first, std::nullopt));
  REQUIRE(tick_until(sched2, [&](const scheduler_status& s) {
    return count_phase(s, job_phase::ready) == 1 && s.jobs.size() == 1 && s.jobs[0].job != first;
  }, 20s));
  // Cleanup: the last job is stopped by a deployment that wants none.
  auto stop = scheduler(d.write(local_deployment(R"("min_instances": 0, "max_instances": 1, "idle_before_zero": 0)")));
  REQUIRE(tick_until(stop, [](const scheduler_status& s) { return s.jobs.empty(); }, 30s));
}

TEST_CASE("a job is replaced only after consecutive failed health probes") {
  deployment_dir d;
  const fs::path fail = d.path / "fail-health";
  std::string cfg = local_deployment(R"("min_instances": 1, "max_instances": 1, "readiness": {"path": "/v1/models"})");
  const std::string plain = json::quoted(backend_template());
  cfg.replace(cfg.find(plain), plain.size(), json::quoted(backend_template("--fail-file " + fail.string())));
  const std::string default_readiness = R"("readiness": {"timeout_ms": 500}, )";
  cfg.replace(cfg.find(default_readiness), default_readiness.size(), "");
  scheduler sched(d.write(cfg));
  REQUIRE(tick_until(sched, [](const scheduler_status& s) { return count_phase(s, job_phase::ready) == 1; }, 20s));
  const std::string first = sched.status()->jobs[0].job;

  std::ofstream(fail).put('x');
  REQUIRE(sched.tick());
  auto st = sched.status();
  CHECK(st->jobs[0].phase == job_phase::ready);  // one failure is not enough
  CHECK(st->jobs[0].failed_probes == 1);
  REQUIRE(sched.tick());
  CHECK(sched.status()->jobs[0].phase == job_phase::stopping);
  fs::remove(fail);
  REQUIRE(tick_until(sched, [&](const scheduler_status& s) {
    return s.jobs.size() == 1 && s.jobs[0].job != first && s.jobs[0].phase == job_phase::ready;
  }, 20s));
  auto stop = scheduler(d.write(local_deployment(R"("min_instances": 0, "max_instances": 1, "idle_before_zero": 0)")));
  REQUIRE(tick_until(stop, [](const scheduler_status& s) { return s.jobs.empty(); }, 30s));
}

TEST_CASE("a failed listing keeps every job; missing jobs are replaced; unknown ones adopted or cancelled") {
  deployment_dir d;
  fake_slurm fake(d.path / "fake");
  const std::string cfg = R"({"state_dir": "state", "job_prefix": "t-",
    "slurm": {"sbatch": "fake/sbatch", "squeue": "fake/squeue", "scancel": "fake/scancel", "timeout_ms": 2000},
    "services": [{"id": "svc", "models": ["m"], "min_instances": 1, "max_instances": 2,
                  "time_limit": "10:00", "template": "#!/bin/sh\nsleep 1000\n"}]})";
  scheduler sched(d.write(cfg));
  auto first = sched.tick();
  REQUIRE(first);
  CHECK(first->submitted == 1);
  auto st = sched.status();
  REQUIRE(st->jobs.size() == 1);
  const auto job = st->jobs[0];
  CHECK(job.job == "100");
  const std::string name = "t-svc." + job.token;
  CHECK(fake.read("sbatch.log") == "100 " + name + "\n");

  std::ofstream(fake.dir / "squeue.out") << "100|" << name << "|RUNNING|1-00:00:00|UNLIMITED|gpu[01-02]|None\n";
  REQUIRE(sched.tick());
  CHECK(sched.status()->jobs[0].phase == job_phase::starting);
  CHECK(sched.status()->jobs[0].time_left == std::chrono::seconds(86400));

  // squeue fails: nothing is dropped, submitted or cancelled.
  std::ofstream(fake.dir / "squeue.fail");
  auto blind = sched.tick();
  REQUIRE(blind);
  CHECK(blind->unknown_listings == std::vector<std::string>{"slurm"});
  CHECK(blind->submitted == 0);
  CHECK(blind->cancelled == 0);
  st = sched.status();
  REQUIRE(st->jobs.size() == 1);
  CHECK(st->jobs[0].job == "100");
  CHECK_FALSE(st->services[0].listing_known);
  fs::remove(fake.dir / "squeue.fail");

  // Back: a job of ours missing from the record (its key exists) is adopted; one with our
  // prefix and no key is cancelled; someone else's job is left alone.
  const std::string orphan_token = "0123456789abcdef";
  REQUIRE(write_job_key(state_dir(d.state()), orphan_token, "a-key-of-sixteen-or-more"));
  std::ofstream(fake.dir / "squeue.out") << "100|" << name << "|RUNNING|10:00|10:00|n1|None\n"
                                         << "200|t-svc." << orphan_token << "|PENDING|10:00|10:00||Resources\n"
                                         << "300|t-svc.ffffffffffffffff|RUNNING|10:00|10:00|n1|None\n"
                                         << "400|other-job|RUNNING|10:00|10:00|n1|None\n";
  auto back = sched.tick();
  REQUIRE(back);
  CHECK(back->adopted == 1);
  // The adopted job is one more than the target needs and still pending: it is cancelled too.
  CHECK(fake.read("scancel.log") == "--quiet 300\n--quiet 200\n");
  st = sched.status();
  REQUIRE(st->jobs.size() == 2);
  CHECK(st->jobs[1].job == "200");
  CHECK(st->jobs[1].phase == job_phase::stopping);

  // The job ended outside: it leaves the record, its files go, and a replacement comes.
  std::ofstream(fake.dir / "squeue.out") << "200|t-svc." << orphan_token << "|PENDING|10:00|10:00||Resources\n";
  auto replaced = sched.tick();
  REQUIRE(replaced);
  st = sched.status();
  REQUIRE(st->jobs.size() == 2);
  CHECK(replaced->submitted == 1);
  CHECK_FALSE(fs::exists(state_dir(d.state()).keys_dir() / job.token));
}

TEST_CASE("ticks never overlap, and the one after a killed tick carries on") {
  deployment_dir d;
  fake_slurm fake(d.path / "fake");
  // sbatch sleeps, so that the child below is killed in the middle of its tick.
  fake.write("sbatch.real", fake.read("sbatch"));
  fake.write("sbatch", "#!/bin/sh\nsleep 1\nexec " + (fake.dir / "sbatch.real").string() + " \"$@\"\n");
  const std::string cfg = R"({"state_dir": "state", "job_prefix": "t-",
    "slurm": {"sbatch": "fake/sbatch", "squeue": "fake/squeue", "scancel": "fake/scancel"},
    "services": [{"id": "svc", "models": ["m"], "min_instances": 3, "max_instances": 3,
                  "time_limit": "10:00", "template": "#!/bin/sh\nsleep 1000\n"}]})";
  scheduler sched(d.write(cfg));
  REQUIRE(sched.init());
  const pid_t child = ::fork();
  if (child == 0) {
    (void)sched.tick();
    ::_exit(0);
  }
  std::this_thread::sleep_for(500ms);
  // While the child ticks, another tick is refused rather than run beside it.
  auto busy = sched.tick();
  REQUIRE_FALSE(busy);
  CHECK(busy.err().code() == errc::unavailable);
  std::this_thread::sleep_for(750ms);
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);

  // The killed tick submitted some jobs without recording them: squeue shows them.
  std::ofstream out(fake.dir / "squeue.out");
  std::istringstream log(fake.read("sbatch.log"));
  std::string id, name;
  int submitted = 0;
  while (log >> id >> name) {
    out << id << "|" << name << "|PENDING|10:00|10:00||Priority\n";
    ++submitted;
  }
  out.close();
  CHECK(submitted >= 1);
  CHECK(submitted < 3);
  auto next = sched.tick();
  REQUIRE_MESSAGE(next, (next ? "" : next.err().message()));
  CHECK(next->adopted == submitted);
  CHECK(next->submitted == 3 - submitted);
  CHECK(sched.status()->jobs.size() == 3);
  CHECK(read_registry(state_dir(d.state())));
}
