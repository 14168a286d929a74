// Test helpers for the gate: a temporary state directory with a registry and job keys, the job
// key proof for test backends, and running a verb over pipes as sshd would.
#pragma once

#include <atomic>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <string>
#include <thread>

#include <doctest/doctest.h>

#include "chatai/core/http_server.hpp"
#include "chatai/core/key_proof.hpp"
#include "chatai/gate/config.hpp"
#include "chatai/gate/gate.hpp"
#include "chatai/slurm/registry.hpp"

namespace chatai::gate::testing {

namespace fs = std::filesystem;

struct temp_dir {
  fs::path path;
  temp_dir() {
    std::random_device rd;
    path = fs::temp_directory_path() / ("chatai-gate-test-" + std::to_string(::getpid()) + "-" + std::to_string(rd()));
    fs::create_directories(path);
  }
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
};

// Every path under `root`, relative, for "nothing was created" checks.
inline std::set<std::string> listing(const fs::path& root) {
  std::set<std::string> out;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(root, ec); !ec && it != fs::recursive_directory_iterator(); ++it)
    out.insert(fs::relative(it->path(), root).string());
  return out;
}

inline std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// The key gate_fixture gives job `job`.
inline std::string job_key(const std::string& job) { return "secret-of-job-" + job + "-0123456789"; }

// Makes a test backend answer the gate's job key proof for `key`, as chatai serve does.
// `proofs`, when given, counts the proofs asked for.
inline void add_key_proof_route(http::router& routes, std::string key, std::atomic<int>* proofs = nullptr) {
  routes.add("GET", std::string(key_proof::path), [key = std::move(key), proofs](http::request& req, http::response res) {
    if (proofs) ++*proofs;
    const std::string* challenge = req.headers.find(key_proof::challenge_header);
    if (!challenge || !key_proof::valid_challenge(*challenge)) {
      res.send_error(400, "bad challenge");
      return;
    }
    res.send(200, "text/plain", key_proof::answer(key, *challenge));
  });
}

// One service "chat" serving model "smol", with the given backends on 127.0.0.1.
struct gate_fixture {
  temp_dir dir;
  gate_config config;
  slurm::registry reg;

  gate_fixture() {
    config.state_dir = dir.path / "state";
    config.read_timeout = std::chrono::milliseconds(2000);
    config.connect_timeout = std::chrono::milliseconds(1000);
    config.first_byte_timeout = std::chrono::milliseconds(5000);
    config.idle_timeout = std::chrono::milliseconds(5000);
    reg.services.push_back({"chat", {"smol"}, false});
  }

  slurm::state_dir state() const { return slurm::state_dir(config.state_dir); }

  void add_backend(const std::string& job, std::uint16_t port, slurm::backend_state st = slurm::backend_state::ready) {
    reg.backends.push_back({job, "chat", "127.0.0.1", port, st, job + ".key"});
    REQUIRE(slurm::write_job_key(state(), job + ".key", job_key(job)));
  }

  void publish() { REQUIRE(slurm::write_registry(state(), reg)); }
};

struct run_output {
  int exit_code = -1;
  std::string out;
};

// Runs `v` with `input` on its stdin. With keep_open the client side stays open until the
// gate returns (as a tunnel does while it waits for the response); otherwise it is closed
// right after the input.
inline run_output run_verb(const gate_config& config, verb v, const std::string& input, bool keep_open = true) {
  int in[2], out[2];
  REQUIRE(::pipe2(in, O_CLOEXEC) == 0);
  REQUIRE(::pipe2(out, O_CLOEXEC) == 0);
  std::thread writer([&] {
    std::string_view rest(input);
    while (!rest.empty()) {
      const ssize_t n = ::write(in[1], rest.data(), rest.size());
      if (n <= 0) break;
      rest.remove_prefix(static_cast<std::size_t>(n));
    }
    if (!keep_open) {
      ::close(in[1]);
      in[1] = -1;
    }
  });
  run_output result;
  std::thread reader([&] {
    char buffer[4096];
    for (;;) {
      const ssize_t n = ::read(out[0], buffer, sizeof buffer);
      if (n <= 0) break;
      result.out.append(buffer, static_cast<std::size_t>(n));
    }
  });
  result.exit_code = run(config, v, in[0], out[1]);
  writer.join();
  ::close(out[1]);
  reader.join();
  ::close(out[0]);
  ::close(in[0]);
  if (in[1] >= 0) ::close(in[1]);
  return result;
}

// The status code of an HTTP response's status line (0 when there is none).
inline int status_of(const std::string& response) {
  if (response.rfind("HTTP/1.1 ", 0) != 0 || response.size() < 12) return 0;
  return std::stoi(response.substr(9, 3));
}

inline std::string header_line(const std::string& service, const std::string& path, std::size_t body_length,
                               const std::string& extra = "") {
  return "{\"v\":1,\"id\":\"req-1\",\"user\":\"u1\",\"service\":\"" + service + "\",\"method\":\"POST\",\"path\":\"" +
         path + "\"" + extra + ",\"body_length\":" + std::to_string(body_length) + "}\n";
}

inline std::string chat_request(const std::string& body, const std::string& extra = "") {
  return header_line("chat", "/v1/chat/completions", body.size(), extra) + body;
}

}  // namespace chatai::gate::testing
