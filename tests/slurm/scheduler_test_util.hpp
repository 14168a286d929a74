// Test helpers for the scheduler: a temporary deployment whose jobs run the stand-in server
// (tests/fixtures/scheduler_backend.py), ticking until a condition holds, and requests sent
// to a backend the way the gate sends them.
#pragma once

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include "chatai/core/config.hpp"
#include "chatai/core/http_client.hpp"
#include "chatai/slurm/registry.hpp"
#include "chatai/slurm/scheduler.hpp"

namespace chatai::slurm::testing {

namespace fs = std::filesystem;

inline const std::string backend_script = std::string(CHATAI_SOURCE_DIR) + "/tests/fixtures/scheduler_backend.py";

// The job script of the stand-in server; `exec` makes it the batch shell, so that Slurm's
// --signal=B:USR1 reaches it.
inline std::string backend_template(const std::string& extra_args = "") {
  return "#!/bin/sh\nexec python3 " + backend_script +
         " --key-file {{key_file}} --endpoint-file {{endpoint_file}} " + extra_args + "\n";
}

// A folder for one test's deployment file and state directory.
struct deployment_dir {
  fs::path path;

  deployment_dir() {
    std::random_device rd;
    path = fs::temp_directory_path() / ("chatai-sched-" + std::to_string(::getpid()) + "-" + std::to_string(rd()));
    fs::create_directories(path);
  }
  ~deployment_dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  deployment_dir(const deployment_dir&) = delete;
  deployment_dir& operator=(const deployment_dir&) = delete;

  fs::path state() const { return path / "state"; }

  // Writes deploy.json and loads it.
  deployment_config write(const std::string& json) const {
    const fs::path file = path / "deploy.json";
    std::ofstream(file) << json;
    auto cfg = load_deployment(file);
    REQUIRE_MESSAGE(cfg, (cfg ? "" : cfg.err().message()));
    return *cfg;
  }
};

// Ticks (every `step`) until `pred(status)` holds or `limit` passes.
template <class Pred>
bool tick_until(scheduler& sched, Pred pred, std::chrono::milliseconds limit,
                std::chrono::milliseconds step = std::chrono::milliseconds(500)) {
  const auto end = std::chrono::steady_clock::now() + limit;
  for (;;) {
    auto report = sched.tick();
    if (!report) MESSAGE("tick: " << report.err().message());
    auto st = sched.status();
    if (st && pred(*st)) return true;
    if (std::chrono::steady_clock::now() >= end) return false;
    std::this_thread::sleep_for(step);
  }
}

inline std::int64_t count_phase(const scheduler_status& st, job_phase phase) {
  std::int64_t n = 0;
  for (const auto& j : st.jobs) n += j.phase == phase;
  return n;
}

// Sends one chat request to a backend with its key, as the gate does.
inline result<http::client_response> ask_backend(const state_dir& dir, const backend_entry& b) {
  auto key = read_job_key(dir, b.key_file);
  if (!key) return std::move(key).err();
  http::client_request req;
  req.method = "POST";
  req.host = "127.0.0.1";
  req.port = static_cast<std::uint16_t>(b.port);
  req.target = "/v1/chat/completions";
  req.headers.add("Authorization", "Bearer " + *key);
  req.headers.add("Content-Type", "application/json");
  req.body = R"({"model":"m","messages":[{"role":"user","content":"hi"}]})";
  http::client_options o;
  o.connect_timeout = std::chrono::seconds(2);
  o.first_byte_timeout = std::chrono::seconds(10);
  return http::fetch(req, o);
}

// The ids of the processes that have `text` on their command line.
inline std::vector<int> processes_with_on_command_line(const std::string& text) {
  std::vector<int> pids;
  for (const auto& entry : fs::directory_iterator("/proc")) {
    const auto name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    auto cmdline = config::read_file(entry.path() / "cmdline");
    if (cmdline && cmdline->find(text) != std::string::npos) pids.push_back(std::stoi(name));
  }
  return pids;
}

// Whether any process has `text` on its command line.
inline bool on_some_command_line(const std::string& text) { return !processes_with_on_command_line(text).empty(); }

}  // namespace chatai::slurm::testing
