// Tests of Slurm durations, host lists and squeue parsing.
#include <doctest/doctest.h>

#include "chatai/slurm/slurm_format.hpp"

using namespace chatai;
using namespace chatai::slurm;
using std::chrono::seconds;

TEST_CASE("every duration form Slurm prints is read") {
  struct row {
    const char* text;
    long long secs;
  };
  for (const auto& [text, secs] : {row{"5", 300}, row{"05:30", 330}, row{"1:02:03", 3723}, row{"2-00", 172800},
                                   row{"1-00:00:00", 86400}, row{"1-02:03", 93780}, row{"3-04:05:06", 273906},
                                   row{"0:00", 0}, row{"30-00:00:00", 2592000}}) {
    CAPTURE(text);
    auto d = parse_duration(text);
    REQUIRE(d);
    CHECK(d->what == slurm_duration::kind::finite);
    CHECK(d->value == seconds(secs));
  }
  CHECK(parse_duration("UNLIMITED")->what == slurm_duration::kind::unlimited);
  CHECK(parse_duration("INFINITE")->what == slurm_duration::kind::unlimited);
  CHECK(parse_duration("INVALID")->what == slurm_duration::kind::unknown);
  CHECK(parse_duration("NOT_SET")->what == slurm_duration::kind::unknown);
  for (const char* bad : {"", "-", "1-", "a:b", "1:2:3:4", "1--2", " 5", "5 ", "99999999999999:00"}) {
    CAPTURE(bad);
    auto d = parse_duration(bad);
    REQUIRE_FALSE(d);
    CHECK(d.err().message().find("not a Slurm duration") == 0);
  }
}

TEST_CASE("durations format for sbatch and read back") {
  CHECK(format_duration(seconds(59)) == "00:00:59");
  CHECK(format_duration(seconds(3723)) == "01:02:03");
  CHECK(format_duration(seconds(273906)) == "3-04:05:06");
  for (long long s : {0LL, 61LL, 86399LL, 86400LL, 1000000LL}) {
    CHECK(parse_duration(format_duration(seconds(s)))->value == seconds(s));
  }
}

TEST_CASE("host lists expand with ranges, padding and several groups") {
  CHECK(*expand_hostlist("gpu01") == std::vector<std::string>{"gpu01"});
  CHECK(*expand_hostlist("gpu[01-03,07],cpu1") == std::vector<std::string>{"gpu01", "gpu02", "gpu03", "gpu07", "cpu1"});
  CHECK(*expand_hostlist("r[1-2]n[8-9]") == std::vector<std::string>{"r1n8", "r1n9", "r2n8", "r2n9"});
  CHECK(*expand_hostlist("n[098-101]") == std::vector<std::string>{"n098", "n099", "n100", "n101"});
  CHECK(expand_hostlist("")->empty());
  CHECK(expand_hostlist("(null)")->empty());
  for (const char* bad : {"gpu[01", "gpu]", "gpu[]", "gpu[3-1]", "gpu[a-b]", "a,,b", "gpu[1-2]]"}) {
    CAPTURE(bad);
    CHECK_FALSE(expand_hostlist(bad));
  }
  CHECK(expand_hostlist("n[0-99999]", 100).err().code() == errc::out_of_range);
}

TEST_CASE("squeue lines are parsed; a malformed one fails the whole listing") {
  const std::string out =
      "101|chatai-smollm2|RUNNING|1-02:00:00|2-00:00:00|gpu[01-02]|None\n"
      "102|chatai-smollm2|PENDING|2:00:00|2:00:00||(Resources)\n"
      "103|chatai-llama|RUNNING|UNLIMITED|UNLIMITED|cpu1|a|b\n";
  auto jobs = parse_squeue(out);
  REQUIRE(jobs);
  REQUIRE(jobs->size() == 3);
  CHECK((*jobs)[0].job_id == "101");
  CHECK((*jobs)[0].time_left.value == seconds(93600));
  CHECK((*jobs)[0].time_limit.value == seconds(172800));
  CHECK((*jobs)[0].nodes == std::vector<std::string>{"gpu01", "gpu02"});
  CHECK((*jobs)[1].state == "PENDING");
  CHECK((*jobs)[1].nodes.empty());
  CHECK((*jobs)[1].reason == "(Resources)");
  CHECK((*jobs)[2].time_left.what == slurm_duration::kind::unlimited);
  CHECK((*jobs)[2].reason == "a|b");
  CHECK(parse_squeue("")->empty());

  auto bad = parse_squeue("101|x|RUNNING|1-00:00:00|UNLIMITED|n1|None\n102|y|RUNNING|soon|1:00|n1|None\n");
  REQUIRE_FALSE(bad);
  CHECK(bad.err().message().find("squeue line 2") == 0);
  CHECK_FALSE(parse_squeue("slurm_load_jobs error: Unable to contact slurm controller\n"));
}
