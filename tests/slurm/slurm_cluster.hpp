// Test helpers for the Slurm adapter: a private single-node Slurm (munged, slurmctld, slurmd)
// for a test's lifetime, and polling until a condition holds.
#pragma once

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <thread>

#include <doctest/doctest.h>

#include "chatai/core/subprocess.hpp"
#include "chatai/slurm/slurm_driver.hpp"

namespace chatai::slurm::testing {

namespace fs = std::filesystem;

inline const std::string fixture_script = std::string(CHATAI_SOURCE_DIR) + "/tests/fixtures/slurm_cluster.sh";

// Starts a private Slurm for the test's lifetime.
// Thread safety: one owner.
struct slurm_cluster {
  fs::path dir;
  std::string conf;

  slurm_cluster() {
    REQUIRE_MESSAGE(::geteuid() == 0, "the Slurm tests start slurmctld and slurmd and must run as root");
    dir = fs::temp_directory_path() / ("chatai-slurm-" + std::to_string(::getpid()));
    fs::remove_all(dir);
    const bool started = fixture("start");
    REQUIRE_MESSAGE(started, "the Slurm fixture did not start; see " << dir.string());
    conf = (dir / "slurm.conf").string();
  }
  ~slurm_cluster() {
    (void)fixture("stop");
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  slurm_cluster(const slurm_cluster&) = delete;
  slurm_cluster& operator=(const slurm_cluster&) = delete;

  bool fixture(const std::string& action) const {
    subprocess_options o;
    o.argv = {"bash", fixture_script, action, dir.string()};
    o.timeout = std::chrono::seconds(60);
    auto r = run_subprocess(o);
    if (r && r->exit_code != 0) MESSAGE(r->err);
    return r && r->exit_code == 0;
  }

  driver_options options() const {
    driver_options d;
    d.env["SLURM_CONF"] = conf;
    return d;
  }
};

template <class Pred>
bool wait_for(Pred pred, std::chrono::milliseconds limit, std::chrono::milliseconds step = std::chrono::milliseconds(200)) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(step);
  }
  return pred();
}

}  // namespace chatai::slurm::testing
