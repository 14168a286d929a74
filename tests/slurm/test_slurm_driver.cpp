// The Slurm driver against a real single-node Slurm (munged, slurmctld, slurmd started here).
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "chatai/slurm/slurm_driver.hpp"
#include "slurm_cluster.hpp"

using namespace chatai;
using namespace chatai::slurm;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

using testing::slurm_cluster;
using testing::wait_for;

TEST_CASE("submit, list and cancel jobs on a real Slurm") {
  slurm_cluster cluster;
  slurm_driver driver(cluster.options());

  submit_request req;
  req.job_name = "chatai-test-echo";
  req.script = "#!/bin/sh\necho started\nsleep 300\n";
  req.time_limit = 3min;
  req.time_min = 1min;
  req.signal_lead = 30s;
  req.output_path = (cluster.dir / "job-%j.out").string();
  auto id = driver.submit(req);
  REQUIRE_MESSAGE(id, (id ? "" : id.err().message()));

  submit_request other = req;
  other.job_name = "someone-else";
  auto other_id = driver.submit(other);
  REQUIRE(other_id);

  std::vector<squeue_job> jobs;
  REQUIRE(wait_for([&] {
    auto listed = driver.list("chatai-test-");
    if (!listed) return false;
    jobs = *listed;
    return jobs.size() == 1 && jobs[0].state == "RUNNING";
  }, 30s));
  CHECK(jobs[0].job_id == *id);
  CHECK(jobs[0].name == "chatai-test-echo");
  CHECK(jobs[0].nodes == std::vector<std::string>{"localhost"});
  // With --time-min, Slurm may grant anything between the minimum and the limit.
  REQUIRE(jobs[0].time_limit.what == slurm_duration::kind::finite);
  CHECK(jobs[0].time_limit.value >= 1min);
  CHECK(jobs[0].time_limit.value <= 3min);
  CHECK(jobs[0].time_left.value <= jobs[0].time_limit.value);

  CHECK(driver.cancel(*id));
  CHECK(driver.cancel(*other_id));
  CHECK(wait_for([&] {
    auto listed = driver.list("chatai-test-");
    return listed && (listed->empty() || listed->at(0).state != "RUNNING");
  }, 30s));
}

TEST_CASE("an unreachable controller is an error, never an empty queue") {
  slurm_cluster cluster;
  fs::path broken = cluster.dir / "broken.conf";
  {
    std::ifstream in(cluster.conf);
    std::ofstream out(broken);
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("SlurmctldPort=", 0) == 0) line = "SlurmctldPort=1";
      out << line << "\n";
    }
  }
  driver_options o = cluster.options();
  o.env["SLURM_CONF"] = broken.string();
  slurm_driver driver(o);
  auto listed = driver.list("chatai-");
  REQUIRE_FALSE(listed);
  CHECK(listed.err().message().find("squeue failed") == 0);
  submit_request req;
  req.job_name = "chatai-x";
  req.script = "#!/bin/sh\ntrue\n";
  CHECK_FALSE(driver.submit(req));
}

TEST_CASE("a hanging Slurm command times out as unknown") {
  const fs::path script = fs::temp_directory_path() / ("chatai-hang-" + std::to_string(::getpid()));
  std::ofstream(script) << "#!/bin/sh\nsleep 30\n";
  fs::permissions(script, fs::perms::owner_all);
  driver_options o;
  o.squeue = script.string();
  o.timeout = 300ms;
  slurm_driver driver(o);
  auto listed = driver.list("chatai-");
  REQUIRE_FALSE(listed);
  CHECK(listed.err().code() == errc::timeout);
  fs::remove(script);
}

TEST_CASE("cancel refuses what is not a job id") {
  slurm_driver driver(driver_options{});
  for (const char* bad : {"", "12;rm", "-1", "12 13", "_1", "--user=x"}) {
    CAPTURE(bad);
    CHECK(driver.cancel(bad).err().code() == errc::invalid_argument);
  }
}
