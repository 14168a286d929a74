// `chatai up`: the whole service. Without --config, the embedded default on this machine: the
// gateway with the chat page on loopback, the local transport running chatai-gate as a child,
// the scheduler's local launcher running `chatai serve` with the given model; with --config,
// the gateway of that file against a real cluster. Prints the URL and a fresh API key, and
// stops everything on SIGINT or SIGTERM.
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>

#include "chatai/core/json.hpp"
#include "chatai/core/log.hpp"
#include "chatai/core/unique_fd.hpp"
#include "chatai/gate/config.hpp"
#include "chatai/gateway/gateway.hpp"
#include "chatai/slurm/launcher.hpp"
#include "chatai/slurm/registry.hpp"
#include "chatai/slurm/scheduler.hpp"
#include "commands.hpp"

namespace chatai::cli {

namespace {

namespace fs = std::filesystem;

constexpr const char* job_prefix = "chatai-up-";
constexpr const char* up_key_user = "local";

struct up_options {
  std::string config;
  std::string model;
  std::string served_model_name = "smollm2";
  std::string host = "127.0.0.1";
  int port = 8000;
  std::string state_dir;
  int threads = 0;
  int ctx = 4096;
  int parallel = 8;
};

// The default state folder: $XDG_STATE_HOME/chatai/up, else ~/.local/state/chatai/up.
fs::path default_state_dir() {
  if (const char* xdg = std::getenv("XDG_STATE_HOME"); xdg && *xdg) return fs::path(xdg) / "chatai" / "up";
  if (const char* home = std::getenv("HOME"); home && *home) return fs::path(home) / ".local" / "state" / "chatai" / "up";
  return fs::current_path() / ".chatai-up";
}

// A word for /bin/sh: single-quoted, with any single quote closed, escaped and reopened.
std::string sh_quote(const std::string& word) {
  std::string out = "'";
  for (char c : word) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

result<fs::path> own_binary() {
  std::error_code ec;
  fs::path self = fs::read_symlink("/proc/self/exe", ec);
  if (ec) return error(errc::io_error, "cannot find the chatai program: " + ec.message());
  return self;
}

// The embedded default's files in `root` (which lock_state_folder made): a deployment whose
// one service runs `chatai serve` as a local job, and the gate's config whose keep-alive tick
// drives the scheduler.
struct embedded_files {
  fs::path deployment;
  fs::path gate_config;
  fs::path state;
};

result<embedded_files> write_embedded_files(const up_options& o, const fs::path& root, const fs::path& chatai) {
  embedded_files files{root / "deploy.json", root / "gate.json", root / "state"};
  CHATAI_RETURN_IF_ERROR(slurm::ensure_dir(files.state));

  std::string script = "#!/bin/sh\nexec " + sh_quote(chatai.string()) + " --log-level warn serve --model " +
                       sh_quote(fs::absolute(o.model).string()) + " --served-model-name " +
                       sh_quote(o.served_model_name) + " --host 127.0.0.1 --port 0 --ctx " + std::to_string(o.ctx) +
                       " --parallel " + std::to_string(o.parallel) + " --threads " + std::to_string(o.threads) +
                       " --api-key-file {{key_file}} --endpoint-file {{endpoint_file}}\n";
  std::string deploy = "{\"state_dir\":";
  json::append_quoted(deploy, files.state.string());
  deploy += ",\"job_prefix\":";
  json::append_quoted(deploy, job_prefix);
  deploy += ",\"services\":[{\"id\":\"local\",\"models\":[";
  json::append_quoted(deploy, o.served_model_name);
  deploy += "],\"launcher\":\"local\",\"min_instances\":1,\"max_instances\":1,\"requests_per_instance\":" +
            std::to_string(o.parallel) +
            ",\"time_limit\":31536000,\"rotation_lead\":60,\"start_timeout\":600,\"template\":";
  json::append_quoted(deploy, script);
  deploy += "}]}\n";
  CHATAI_RETURN_IF_ERROR(slurm::replace_file_atomically(files.deployment, deploy));

  std::string gate = "{\"state_dir\":";
  json::append_quoted(gate, files.state.string());
  gate += ",\"backend\":{\"retry_after_s\":2},\"tick\":{\"interval_s\":2,\"command\":";
  json::append_string_array(gate, {chatai.string(), "--log-level", "warn", "scheduler", "--config",
                                   files.deployment.string(), "tick"});
  gate += "}}\n";
  CHATAI_RETURN_IF_ERROR(slurm::replace_file_atomically(files.gate_config, gate));
  // The gate reads its file per request: a mistake here would only show there.
  if (auto checked = gate::load_config(files.gate_config); !checked) return checked.err();
  return files;
}

// Stops the local jobs of the embedded default and waits (up to 15 s) until they are gone.
void stop_local_jobs(const fs::path& state) {
  slurm::local_launcher launcher(slurm::state_dir(state).local_jobs_dir());
  auto jobs = launcher.list(job_prefix);
  if (!jobs) return;
  for (const auto& job : *jobs) (void)launcher.cancel(job.job_id, std::nullopt);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
  while (std::chrono::steady_clock::now() < deadline) {
    auto left = launcher.list(job_prefix);
    if (!left || left->empty()) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

int fail(const std::string& message) {
  std::fprintf(stderr, "chatai up: %s\n", message.c_str());
  return 1;
}

// Holds the state folder for this run: an flock on up.lock, which the kernel drops when the
// process ends however it ends. A second `chatai up` on the same folder is refused before it
// reads or writes anything there, so the running one keeps its key, its model server and its
// files.
result<unique_fd> lock_state_folder(const fs::path& root) {
  std::error_code ec;
  fs::create_directories(root.parent_path(), ec);
  if (ec) return error(errc::io_error, root.parent_path().string() + ": " + ec.message());
  CHATAI_RETURN_IF_ERROR(slurm::ensure_dir(root));
  const fs::path path = root / "up.lock";
  unique_fd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd) return error(errc::io_error, path.string() + ": " + std::strerror(errno));
  if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK) return error(errc::io_error, path.string() + ": flock: " + std::strerror(errno));
    char holder[32] = {};
    const ssize_t n = ::pread(fd.get(), holder, sizeof holder - 1, 0);
    const std::string pid = n > 0 ? std::string(holder, static_cast<std::size_t>(n)) : std::string("?");
    return error(errc::unavailable, "another chatai up (pid " + pid.substr(0, pid.find('\n')) +
                                        ") is running with the state folder " + root.string() +
                                        "; stop it first, or give this one its own --state-dir");
  }
  const std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd.get(), 0) != 0 || ::pwrite(fd.get(), pid.data(), pid.size(), 0) < 0)
    return error(errc::io_error, path.string() + ": write: " + std::strerror(errno));
  return fd;
}

int run_up(const up_options& o) {
  // Blocked before any thread starts, so that only the wait below takes them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  auto chatai = own_binary();
  if (!chatai) return fail(chatai.err().message());
  const fs::path root = o.state_dir.empty() ? default_state_dir() : fs::absolute(o.state_dir);

  result<gateway::gateway_config> config = error(errc::invalid_argument, "no configuration");
  std::optional<embedded_files> files;
  unique_fd state_lock;
  if (!o.config.empty()) {
    config = gateway::load_config(o.config);
    if (!config) return fail(config.err().message());
  } else {
    if (o.model.empty()) return fail("--model FILE is needed (or --config FILE for a real cluster)");
    const fs::path gate_program = chatai->parent_path() / "chatai-gate";
    if (!fs::exists(gate_program)) return fail(gate_program.string() + " is missing; build target chatai_gate_program");
    auto locked = lock_state_folder(root);
    if (!locked) return fail(locked.err().message());
    state_lock = std::move(*locked);
    auto written = write_embedded_files(o, root, *chatai);
    if (!written) return fail(written.err().message());
    files = *written;

    gateway::gateway_config c;
    c.host = o.host;
    c.port = static_cast<std::uint16_t>(o.port);
    c.database = root / "gateway.db";
    c.transport = gateway::transport_kind::local;
    c.local.gate_program = gate_program.string();
    c.local.gate_config = files->gate_config.string();
    c.local.keep_alive_interval = std::chrono::milliseconds(2000);
    config = std::move(c);
  }

  // The port first: when it is taken, nothing has been started and no key revoked.
  auto service = gateway::gateway::create(*config);
  if (!service) return fail(service.err().message());
  if (auto st = (*service)->start(); !st) return fail(st.err().message());

  if (files) {
    slurm::scheduler sched(*slurm::load_deployment(files->deployment));
    status started = sched.init();
    if (started) {
      if (auto tick = sched.tick(); !tick) started = std::move(tick).err();
    }
    if (!started) {
      (*service)->stop();
      stop_local_jobs(files->state);
      return fail(started.err().message());
    }
    // The model list the gateway began with predates this tick.
    (*service)->refresh_models();
  }
  // A fresh key for this run; those of earlier runs are revoked.
  auto& keys = (*service)->keys();
  const auto now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch()).count();
  if (auto earlier = keys.list()) {
    for (const auto& k : *earlier)
      if (k.user == up_key_user && !k.revoked_at_ms) (void)keys.revoke(k.id, now_ms);
  }
  auto key = keys.create(up_key_user, std::nullopt, {});
  if (!key) {
    (*service)->stop();
    if (files) stop_local_jobs(files->state);
    return fail(key.err().message());
  }
  const std::string url = (*service)->url();
  std::string event = "{\"event\":\"listening\",\"url\":";
  json::append_quoted(event, url);
  event += ",\"api_key\":";
  json::append_quoted(event, key->key);
  event += "}\n";
  std::fputs(event.c_str(), stdout);
  std::fflush(stdout);
  std::fprintf(stderr,
               "\nchatai is up.\n  chat page: %s/#key=%s\n  API:       %s/v1  (model \"%s\")\n  API key:   %s\n"
               "Ctrl-C stops it.\n\n",
               url.c_str(), key->key.c_str(), url.c_str(),
               files ? o.served_model_name.c_str() : "see /v1/models", key->key.c_str());

  int sig = 0;
  sigwait(&signals, &sig);
  log::info("up: stopping", {{"signal", sig == SIGINT ? "SIGINT" : "SIGTERM"}});
  (*service)->stop();
  if (files) stop_local_jobs(files->state);
  return 0;
}

}  // namespace

void add_up_command(CLI::App& app, int& exit_code) {
  auto opts = std::make_shared<up_options>();
  auto* cmd = app.add_subcommand("up", "the whole service: gateway, chat page, gate and model server");
  cmd->add_option("--config", opts->config, "a gateway config file: run against a real cluster");
  cmd->add_option("-m,--model", opts->model, "GGUF model file served by the embedded default")
      ->check(CLI::ExistingFile);
  cmd->add_option("--served-model-name", opts->served_model_name, "the model's name in the API")->capture_default_str();
  cmd->add_option("--host", opts->host, "address the gateway listens on")->capture_default_str();
  cmd->add_option("--port", opts->port, "port of the gateway (0: any free port)")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  cmd->add_option("--state-dir", opts->state_dir, "where the embedded default keeps its state (default: "
                  "$XDG_STATE_HOME/chatai/up)");
  cmd->add_option("-t,--threads", opts->threads, "CPU threads of the model server (0: all)")->check(CLI::NonNegativeNumber);
  cmd->add_option("--ctx", opts->ctx, "tokens per sequence")->check(CLI::Range(64, 1 << 20))->capture_default_str();
  cmd->add_option("--parallel", opts->parallel, "sequences decoding together")->check(CLI::Range(1, 256))
      ->capture_default_str();
  cmd->callback([opts, &exit_code] { exit_code = run_up(*opts); });
}

}  // namespace chatai::cli
