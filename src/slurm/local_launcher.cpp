// The local launcher: jobs as supervised process sessions, tracked by files in one folder.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/random.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#include "chatai/core/clock.hpp"
#include "chatai/core/config.hpp"
#include "chatai/core/json.hpp"
#include "chatai/slurm/launcher.hpp"
#include "chatai/slurm/registry.hpp"

extern char** environ;

namespace chatai::slurm {

namespace fs = std::filesystem;

namespace {

// $1 script, $2 time limit (s), $3 signal lead (s), $4 pid file. The supervisor leads the
// job's session: it records its pid, forwards SIGUSR1 to the job shell, and ends the whole
// session at the time limit or when the job is over.
constexpr const char* supervisor_script = R"(
echo $$ > "$4.tmp" && mv "$4.tmp" "$4"
trap 'kill -USR1 "$job" 2>/dev/null' USR1
sh "$1" </dev/null & job=$!
(
  if [ "$3" -gt 0 ]; then sleep $(($2 - $3)); kill -USR1 $$; sleep "$3"; else sleep "$2"; fi
  trap '' TERM; kill -TERM 0; sleep 5; kill -KILL 0
) &
while kill -0 "$job" 2>/dev/null; do wait "$job"; done
trap '' TERM
kill -TERM 0
)";

// A local job's grace between the record being written and the supervisor's pid file.
constexpr std::chrono::seconds spawn_grace{30};

result<std::string> random_id() {
  unsigned char bytes[6];
  if (::getrandom(bytes, sizeof bytes, 0) != static_cast<ssize_t>(sizeof bytes))
    return error(errc::io_error, std::string("getrandom: ") + std::strerror(errno));
  static constexpr char hex[] = "0123456789abcdef";
  std::string id = "local-";
  for (const unsigned char b : bytes) {
    id += hex[b >> 4];
    id += hex[b & 15];
  }
  return id;
}

bool valid_local_id(std::string_view id) {
  return id.size() == 18 && id.rfind("local-", 0) == 0 && valid_job_id(id);
}

struct job_record {
  std::string name;
  std::int64_t started_ms = 0;
  std::int64_t limit_s = 0;
};

result<job_record> read_record(const fs::path& path) {
  job_record rec;
  auto st = config::load(path, [&](json::reader& r) {
    r.required("name", rec.name);
    r.required("started_ms", rec.started_ms);
    r.required("limit_s", rec.limit_s);
  });
  if (!st) return std::move(st).err();
  return rec;
}

// The supervisor's pid when it is alive and still the process that runs `script`.
std::optional<pid_t> live_supervisor(const fs::path& pid_file, const fs::path& script) {
  auto text = config::read_file(pid_file);
  if (!text) return std::nullopt;
  const long pid = std::strtol(text->c_str(), nullptr, 10);
  if (pid <= 1) return std::nullopt;
  int wstatus = 0;
  (void)::waitpid(static_cast<pid_t>(pid), &wstatus, WNOHANG);  // reaps it if it is our child
  auto cmdline = config::read_file("/proc/" + std::to_string(pid) + "/cmdline");
  if (!cmdline || cmdline->find(script.string()) == std::string::npos) return std::nullopt;
  return static_cast<pid_t>(pid);
}

int signal_number(std::string_view name) {
  if (name == "USR1") return SIGUSR1;
  if (name == "USR2") return SIGUSR2;
  if (name == "TERM") return SIGTERM;
  if (name == "INT") return SIGINT;
  if (name == "HUP") return SIGHUP;
  if (name == "KILL") return SIGKILL;
  return 0;
}

std::string replace_all(std::string text, std::string_view from, std::string_view to) {
  for (auto pos = text.find(from); pos != std::string::npos; pos = text.find(from, pos + to.size()))
    text.replace(pos, from.size(), to);
  return text;
}

}  // namespace

result<std::string> local_launcher::submit(const submit_request& request) {
  CHATAI_RETURN_IF_ERROR(ensure_dir(dir_));
  auto id = random_id();
  if (!id) return id;
  const fs::path script = dir_ / (*id + ".sh");
  const fs::path record = dir_ / (*id + ".json");
  const fs::path pid_file = dir_ / (*id + ".pid");
  const fs::path log_file =
      request.output_path.empty() ? dir_ / (*id + ".log") : fs::path(replace_all(request.output_path, "%j", *id));
  CHATAI_RETURN_IF_ERROR(replace_file_atomically(script, request.script));
  std::string rec = "{\"name\":";
  json::append_quoted(rec, request.job_name);
  rec += ",\"started_ms\":" + std::to_string(unix_ms_now()) +
         ",\"limit_s\":" + std::to_string(request.time_limit.count()) + "}\n";
  CHATAI_RETURN_IF_ERROR(replace_file_atomically(record, rec));

  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&actions);
  posix_spawnattr_init(&attr);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  // A job may outlive this process: it must not keep its sockets (a gateway's listening port)
  // or locks open.
  posix_spawn_file_actions_addclosefrom_np(&actions, 3);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  sigset_t none, defaults;
  sigemptyset(&none);
  sigemptyset(&defaults);
  for (const int s : {SIGUSR1, SIGTERM, SIGINT, SIGHUP, SIGPIPE}) sigaddset(&defaults, s);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  const std::string limit = std::to_string(request.time_limit.count());
  const std::string lead = std::to_string(request.signal_lead.count());
  const char* argv[] = {"/bin/sh", "-c", supervisor_script, "sh", script.c_str(), limit.c_str(), lead.c_str(),
                        pid_file.c_str(), nullptr};
  pid_t pid = 0;
  const int rc = ::posix_spawn(&pid, "/bin/sh", &actions, &attr, const_cast<char* const*>(argv), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    std::error_code ec;
    fs::remove(record, ec);
    fs::remove(script, ec);
    return error(errc::io_error, "starting a local job: " + std::string(std::strerror(rc)));
  }
  // The supervisor writes its pid file at once; waiting for it lets a cancel right after
  // submit reach the job.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  std::error_code ec;
  while (!fs::exists(pid_file, ec) && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  return std::move(*id);
}

result<std::vector<squeue_job>> local_launcher::list(std::string_view name_prefix) {
  std::vector<squeue_job> jobs;
  std::error_code ec;
  fs::directory_iterator it(dir_, ec);
  if (ec == std::errc::no_such_file_or_directory) return jobs;
  if (ec) return error(errc::io_error, dir_.string() + ": " + ec.message());
  const std::int64_t now = unix_ms_now();
  for (const auto& entry : it) {
    const auto& path = entry.path();
    if (path.extension() != ".json") continue;
    const std::string id = path.stem().string();
    if (!valid_local_id(id)) continue;
    auto rec = read_record(path);
    if (!rec) return rec.err().with_context("local job record");
    const fs::path script = dir_ / (id + ".sh");
    const fs::path pid_file = dir_ / (id + ".pid");
    const bool spawned = fs::exists(pid_file, ec);
    const bool alive = spawned && live_supervisor(pid_file, script).has_value();
    if (!alive && (spawned || now - rec->started_ms > std::chrono::milliseconds(spawn_grace).count())) {
      for (const auto& p : {pid_file, script, path}) fs::remove(p, ec);
      continue;
    }
    if (rec->name.rfind(name_prefix, 0) != 0) continue;
    squeue_job job;
    job.job_id = id;
    job.name = rec->name;
    job.state = alive ? "RUNNING" : "PENDING";
    const std::int64_t left_s = rec->limit_s - (now - rec->started_ms) / 1000;
    job.time_left = slurm_duration::finite(std::chrono::seconds(std::max<std::int64_t>(left_s, 0)));
    job.time_limit = slurm_duration::finite(std::chrono::seconds(rec->limit_s));
    job.nodes = {"localhost"};
    jobs.push_back(std::move(job));
  }
  return jobs;
}

status local_launcher::cancel(std::string_view job_id, std::optional<std::string> signal) {
  if (!valid_local_id(job_id)) return error(errc::invalid_argument, "not a local job id: \"" + std::string(job_id) + "\"");
  const int number = signal ? signal_number(*signal) : SIGTERM;
  if (number == 0) return error(errc::invalid_argument, "unknown signal \"" + *signal + "\"");
  const std::string id(job_id);
  const auto pid = live_supervisor(dir_ / (id + ".pid"), dir_ / (id + ".sh"));
  if (!pid) return {};  // already over
  // A signal goes to the supervisor, which passes it on to the job shell; a stop ends the session.
  if (::kill(signal ? *pid : -*pid, number) != 0 && errno != ESRCH)
    return error(errc::io_error, "kill " + id + ": " + std::strerror(errno));
  return {};
}

}  // namespace chatai::slurm
