// Tests of the deployment configuration: a full file loads; each mistake names its field.
#include <doctest/doctest.h>

#include "chatai/slurm/service_config.hpp"

using namespace chatai;
using namespace chatai::slurm;
using namespace std::chrono_literals;

namespace {
std::string with_service(const std::string& fields) {
  return R"({"state_dir":"/var/lib/chatai","services":[{"id":"smollm2","models":["smollm2"],"template":"#!/bin/sh\n")" +
         std::string(fields.empty() ? "" : ",") + fields + "}]}";
}
std::string error_of(const std::string& text) {
  auto r = parse_deployment(text, "deploy.json", "/etc/chatai");
  REQUIRE_FALSE(r);
  return r.err().message();
}
}  // namespace

TEST_CASE("a full deployment loads") {
  auto r = parse_deployment(R"({
    "state_dir": "state", "job_prefix": "chatai-", "slurm": {"conf": "slurm.conf", "timeout_ms": 5000},
    "demand_smoothing": 0.3,
    "services": [{
      "id": "llama-8b", "models": ["llama-3.1-8b", "llama"], "template": "#!/bin/sh\nchatai serve --model {{model}}\n",
      "sbatch_args": ["--gres=gpu:1", "--partition=gpu"], "min_instances": 1, "max_instances": 4,
      "requests_per_instance": 16, "time_limit": "1-00:00:00", "time_min": "02:00:00", "rotation_lead": 600,
      "idle_before_zero": "30:00", "readiness": {"path": "/health", "timeout_ms": 1500},
      "health": {"failures_before_unhealthy": 5}, "launcher": "slurm"}]})",
                            "deploy.json", "/etc/chatai");
  REQUIRE_MESSAGE(r, (r ? "" : r.err().message()));
  CHECK(r->state_dir == "/etc/chatai/state");
  CHECK(r->slurm_env.at("SLURM_CONF") == "/etc/chatai/slurm.conf");
  CHECK(r->slurm_timeout == 5000ms);
  REQUIRE(r->services.size() == 1);
  const auto& s = r->services[0];
  CHECK(s.models.size() == 2);
  CHECK(s.time_limit == 24h);
  CHECK(s.time_min == 2h);
  CHECK(s.rotation_lead == 600s);
  CHECK(s.idle_before_zero == 30min);
  CHECK(s.readiness.timeout == 1500ms);
  CHECK(s.health.failures_before_unhealthy == 5);
  CHECK(s.max_instances == 4);
}

TEST_CASE("each mistake names the file and the field") {
  CHECK(error_of(R"({"services":[]})") == "deploy.json: field 'state_dir': is required");
  CHECK(error_of(with_service(R"("max_instances": 0)")) ==
        "deploy.json: field 'services[0].max_instances': must be between 1 and 1000, got 0");
  CHECK(error_of(with_service(R"("min_instances": 3, "max_instances": 2)")) ==
        "deploy.json: field 'services[0].max_instances': must be at least min_instances (3)");
  CHECK(error_of(with_service(R"("time_limit": "soon")")).find("field 'services[0].time_limit'") != std::string::npos);
  CHECK(error_of(with_service(R"("time_limit": "UNLIMITED")")).find("finite") != std::string::npos);
  CHECK(error_of(with_service(R"("time_limit": 3600, "time_min": 7200)")).find("'services[0].time_min'") != std::string::npos);
  CHECK(error_of(with_service(R"("time_limit": 600, "rotation_lead": 600)")).find("'services[0].rotation_lead'") != std::string::npos);
  CHECK(error_of(with_service(R"("launcher": "k8s")")).find("'services[0].launcher'") != std::string::npos);
  CHECK(error_of(with_service(R"("sbatch_args": ["--time=10"])")).find("set by chatai") != std::string::npos);
  CHECK(error_of(with_service(R"("sbatch_args": ["gpu"])")).find("'services[0].sbatch_args'") != std::string::npos);
  CHECK(error_of(with_service(R"("readiness": {"path": "health"})")).find("'services[0].readiness.path'") != std::string::npos);
  CHECK(error_of(with_service(R"("template_file": "x.sh")")).find("exactly one") != std::string::npos);
  CHECK(error_of(with_service(R"("colour": "blue")")) == "deploy.json: field 'services[0].colour': unknown field");
  CHECK(error_of(R"({"state_dir":"s","services":[{"id":"../x","models":["m"],"template":"t"}]})")
            .find("'services[0].id'") != std::string::npos);
  CHECK(error_of(R"({"state_dir":"s","services":[{"id":"a","models":["m"],"template":"t"},{"id":"a","models":["n"],"template":"t"}]})")
            .find("'services[1].id'") != std::string::npos);
  CHECK(error_of(R"({"state_dir":"s","services":[{"id":"a","models":["m"],"template":"t"},{"id":"b","models":["m"],"template":"t"}]})")
            .find("served by another service") != std::string::npos);
}

TEST_CASE("a missing template file names the file") {
  auto msg = error_of(R"({"state_dir":"s","services":[{"id":"a","models":["m"],"template_file":"missing.sh"}]})");
  CHECK(msg.find("field 'services[0].template_file'") != std::string::npos);
  CHECK(msg.find("/etc/chatai/missing.sh") != std::string::npos);
}

TEST_CASE("job templates use only the placeholders the scheduler fills; Slurm programs may be paths") {
  const std::string bad = R"({"state_dir":"s","services":[{"id":"a","models":["a"],"template":"run {{key_file}} {{port}}"}]})";
  const auto message = error_of(bad);
  CHECK(message.find("field 'services[0].template'") != std::string::npos);
  CHECK(message.find("{{port}}") != std::string::npos);
  auto r = parse_deployment(R"({"state_dir":"s","slurm":{"squeue":"bin/squeue","sbatch":"sbatch"},
    "services":[{"id":"a","models":["a"],"template":"run {{key_file}} {{endpoint_file}}"}]})", "deploy.json", "/etc/chatai");
  REQUIRE(r);
  CHECK(r->squeue == "/etc/chatai/bin/squeue");
  CHECK(r->sbatch == "sbatch");
  CHECK(error_of(R"({"state_dir":"s","slurm":{"scancel":""},"services":[{"id":"a","models":["a"],"template":"x"}]})")
            .find("'slurm.scancel'") != std::string::npos);
}
