// src/slurm/templates/vllm.sbatch on a real Slurm, with tests/fixtures/openai_server.py in the place of
// `vllm serve`: the job turns ready behind `chatai proxy`, a streamed request through the gate
// (key proof, then forwarding) is answered, the job key is on no command line and reaches the
// server only in VLLM_API_KEY, and the rotation signal lets a request in flight finish before
// the job exits.
#include <doctest/doctest.h>

#include <sstream>
#include <thread>

#include "../gate/gate_test_util.hpp"
#include "chatai/core/config.hpp"
#include "chatai/core/http_client.hpp"
#include "chatai/core/json.hpp"
#include "chatai/slurm/slurm_driver.hpp"
#include "scheduler_test_util.hpp"
#include "slurm_cluster.hpp"

using namespace chatai;
using namespace chatai::slurm;
using namespace chatai::slurm::testing;
using namespace std::chrono_literals;

namespace {

const std::string stand_in = std::string(CHATAI_SOURCE_DIR) + "/tests/fixtures/openai_server.py";

// The shipped template as an operator adapts it: the variables of its first block set, the GPU
// and CPU requests dropped (the test node has no GPUs and few cores).
std::string vllm_template() {
  auto text = config::read_file(std::string(CHATAI_SOURCE_DIR) + "/src/slurm/templates/vllm.sbatch");
  REQUIRE(text);
  const std::pair<std::string, std::string> settings[] = {
      {"MODEL=", "MODEL=/models/Llama-3.3-70B-Instruct"},
      {"VLLM=", "VLLM=(python3 " + stand_in + ")"},
      {"CHATAI=", "CHATAI=" + std::string(CHATAI_BINARY_DIR) + "/bin/chatai"},
      {"LISTEN=", "LISTEN=127.0.0.1"},
      {"START_TIMEOUT=", "START_TIMEOUT=60"},
  };
  std::istringstream in(*text);
  std::string out, line;
  int replaced = 0;
  while (std::getline(in, line)) {
    if (line.starts_with("#SBATCH --gres") || line.starts_with("#SBATCH --cpus-per-task") ||
        line.starts_with("#SBATCH --mem"))
      continue;
    for (const auto& [prefix, value] : settings)
      if (line.starts_with(prefix)) {
        line = value;
        ++replaced;
      }
    out += line + "\n";
  }
  CHECK(replaced == static_cast<int>(std::size(settings)));
  return out;
}

std::string deployment(const slurm_cluster& cluster) {
  return R"({"state_dir": "state", "job_prefix": "vt-", "slurm": {"conf": )" + json::quoted(cluster.conf) +
         R"(, "timeout_ms": 5000}, "services": [{"id": "big", "models": ["llama-70b"], "min_instances": 1,
    "max_instances": 1, "time_limit": "10:00", "rotation_lead": 60,
    "readiness": {"timeout_ms": 2000}, "health": {"timeout_ms": 2000}, "template": )" +
         json::quoted(vllm_template()) + "}]}";
}

// A streamed chat request of `tokens` tokens (0.1 s each) through the gate.
gate::testing::run_output ask_gate(const fs::path& state, int tokens) {
  gate::gate_config cfg;
  cfg.state_dir = state;
  cfg.connect_timeout = 2s;
  cfg.first_byte_timeout = 20s;
  const std::string body = R"({"model":"llama-70b","stream":true,"max_tokens":)" + std::to_string(tokens) +
                           R"(,"messages":[{"role":"user","content":"hi"}]})";
  return gate::testing::run_verb(cfg, gate::verb::request,
                                 gate::testing::header_line("big", "/v1/chat/completions", body.size()) + body);
}

bool has_all_tokens(const std::string& response, int tokens) {
  for (int i = 0; i < tokens; ++i)
    if (response.find("\"t" + std::to_string(i) + " \"") == std::string::npos) return false;
  return response.find("data: [DONE]") != std::string::npos;
}

}  // namespace

TEST_CASE("on a real Slurm: the vLLM template behind chatai proxy serves, hides its key and drains on the rotation signal") {
  slurm_cluster cluster;
  deployment_dir d;
  scheduler sched(d.write(deployment(cluster)));
  REQUIRE(sched.init());
  const state_dir dir(d.state());
  REQUIRE(tick_until(sched, [](const scheduler_status& s) { return count_phase(s, job_phase::ready) == 1; }, 90s));
  const auto job = sched.status()->jobs[0];
  auto reg = read_registry(dir);
  REQUIRE(reg->backends.size() == 1);
  const auto backend = reg->backends[0];
  CHECK(backend.host == "127.0.0.1");

  // Through the gate: the proxy proves the key, and the stand-in streams its answer.
  auto answer = ask_gate(d.state(), 5);
  CHECK(gate::testing::status_of(answer.out) == 200);
  CHECK(has_all_tokens(answer.out, 5));

  // The key: on no command line, in the stand-in's environment only.
  const auto key = read_job_key(dir, job.token);
  REQUIRE(key);
  CHECK_FALSE(on_some_command_line(*key));
  const auto servers = processes_with_on_command_line(stand_in);
  REQUIRE(servers.size() == 1);
  auto environment = config::read_file("/proc/" + std::to_string(servers[0]) + "/environ");
  REQUIRE(environment);
  CHECK(environment->find("VLLM_API_KEY=" + *key + '\0') != std::string::npos);
  // Without the key the proxy forwards nothing.
  http::client_request bare;
  bare.host = "127.0.0.1";
  bare.port = static_cast<std::uint16_t>(backend.port);
  bare.target = "/v1/models";
  auto refused = http::fetch(bare);
  REQUIRE(refused);
  CHECK(refused->status == 401);

  // The rotation signal while a 3-second request is in flight: the request finishes, a new
  // one is refused, and the job ends.
  gate::testing::run_output long_answer;
  std::thread client([&] { long_answer = ask_gate(d.state(), 30); });
  std::this_thread::sleep_for(1s);
  const slurm_driver driver(cluster.options());
  REQUIRE(driver.cancel(job.job, std::string("USR1")));
  std::this_thread::sleep_for(500ms);
  http::client_request late = bare;
  late.headers.add("Authorization", "Bearer " + *key);
  auto refused_late = http::fetch(late);
  REQUIRE(refused_late);
  CHECK(refused_late->status == 503);
  client.join();
  CHECK(gate::testing::status_of(long_answer.out) == 200);
  CHECK(has_all_tokens(long_answer.out, 30));

  CHECK(wait_for([&] {
    auto listed = driver.list("vt-");
    if (!listed) return false;
    for (const auto& j : *listed)
      if (j.job_id == job.job && (j.state == "RUNNING" || j.state == "COMPLETING")) return false;
    return !on_some_command_line(stand_in);
  }, 30s));
  std::string log;
  for (const auto& entry : fs::directory_iterator(dir.logs_dir()))
    if (auto text = config::read_file(entry.path())) log += *text;
  MESSAGE("job log:\n" << log);
  CHECK(log.find("proxy: draining in_flight=1") != std::string::npos);
  CHECK(log.find("proxy: drained, exiting") != std::string::npos);
  CHECK(log.find("openai_server: drained, exiting") != std::string::npos);
}
