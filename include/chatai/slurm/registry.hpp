// The state directory on the login node, shared by the scheduler (writer) and every gate
// process (readers): the service registry, per-job backend keys, in-flight markers and the
// "start requested" flags of services that scale from zero.
//
// Layout under the state directory (folders 0700, files 0600):
//   registry.json        the registry document; replaced whole by rename, never edited
//   registry.lock        flock'ed by writers of registry.json so two never interleave
//   keys/<key_file>      one secret per job: the job's server requires it, the gate sends it
//   inflight/<marker>    one file per request in flight, flock'ed by its gate for its lifetime
//   breakers/<job>       the circuit breaker of each backend (owned by chatai::gate)
//   start/<service>      present when a gate asked for a service with no backend to be started
//   usage.jsonl          one JSON line per request (owned by chatai::gate)
//   tick.stamp           the time of the last scheduler tick, flock'ed while a tick runs
//   scheduler.json       the scheduler's own record of its jobs; replaced whole by rename
//   scheduler.lock       flock'ed for the whole of a scheduler tick
//   endpoints/<token>    host and port of a job's server, written by the job itself
//   local/<job>.*        script, log and record of each job of the local launcher
//   logs/                the output of Slurm jobs
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "chatai/core/status.hpp"
#include "chatai/core/unique_fd.hpp"
#include "chatai/proto/wire.hpp"

namespace chatai::slurm {

// Anchored character checks for names that end up in file names and URLs. Each also refuses
// "." and "..". Service ids and model names follow the gate protocol's rules.
using proto::valid_model_name;
using proto::valid_service_id;
bool valid_job_id(std::string_view id) noexcept;      // [A-Za-z0-9._-]{1,64}
bool valid_host(std::string_view host) noexcept;      // [A-Za-z0-9.-]{1,253}, a name or IPv4

enum class backend_state { starting, ready, draining };

std::string_view to_string(backend_state state) noexcept;

struct service_entry {
  std::string id;
  std::vector<std::string> models;  // the names its backends serve (a request's "model"); empty: any
  bool can_scale_from_zero = false;
  std::int64_t pending = 0;  // jobs submitted that have no endpoint yet (queued or starting up)
};

// One Slurm job serving one service.
struct backend_entry {
  std::string job;  // the Slurm job id; also names the breaker file
  std::string service;
  std::string host;
  std::int64_t port = 0;
  backend_state state = backend_state::starting;
  std::string key_file;  // a file name under keys/
};

// The registry document. `generation` grows by one with every write.
// Thread safety: a value type.
struct registry {
  std::int64_t generation = 0;
  std::vector<service_entry> services;
  std::vector<backend_entry> backends;

  const service_entry* find_service(std::string_view id) const noexcept;
};

// Parses and checks a registry document: every name passes its check above, every backend
// names a known service, no service or job appears twice.
result<registry> parse_registry(std::string_view text);
std::string to_json(const registry& reg);

// Paths in one state directory. Names passed in must pass the checks above; the functions
// that take them refuse anything else.
// Thread safety: a value type; the functions below may run in many processes at once.
class state_dir {
 public:
  explicit state_dir(std::filesystem::path root) : root_(std::move(root)) {}

  const std::filesystem::path& root() const noexcept { return root_; }
  std::filesystem::path registry_file() const { return root_ / "registry.json"; }
  std::filesystem::path registry_lock_file() const { return root_ / "registry.lock"; }
  std::filesystem::path keys_dir() const { return root_ / "keys"; }
  std::filesystem::path inflight_dir() const { return root_ / "inflight"; }
  std::filesystem::path breakers_dir() const { return root_ / "breakers"; }
  std::filesystem::path start_dir() const { return root_ / "start"; }
  std::filesystem::path usage_file() const { return root_ / "usage.jsonl"; }
  std::filesystem::path tick_stamp_file() const { return root_ / "tick.stamp"; }
  std::filesystem::path scheduler_state_file() const { return root_ / "scheduler.json"; }
  std::filesystem::path scheduler_lock_file() const { return root_ / "scheduler.lock"; }
  std::filesystem::path endpoints_dir() const { return root_ / "endpoints"; }
  std::filesystem::path local_jobs_dir() const { return root_ / "local"; }
  std::filesystem::path logs_dir() const { return root_ / "logs"; }

 private:
  std::filesystem::path root_;
};

// Creates a folder of the layout (0700) when it does not exist. One that exists must be a
// real folder (not a symbolic link), owned by the effective user and not writable by group or
// others; otherwise the error names the folder and what is wrong with it.
status ensure_dir(const std::filesystem::path& dir);

// Checks the state directory and each of its subfolders that exists as ensure_dir does, so
// that a misconfigured folder is refused before anything is read or written. A folder that
// does not exist yet is fine.
status check_state_dir(const state_dir& dir);

// Writes `path` whole or not at all (mode 0600): a temporary file in the same folder,
// fsync, rename over `path`, fsync of the folder.
status replace_file_atomically(const std::filesystem::path& path, std::string_view contents);

// The last complete registry. Readers take no lock: writers replace the file by rename.
result<registry> read_registry(const state_dir& dir);

// Replaces the registry: under the flock of registry.lock, writes a temporary file, fsyncs
// it, renames it over registry.json and fsyncs the folder. Sets reg.generation to one more
// than the stored one.
status write_registry(const state_dir& dir, registry& reg);

// Stores a job's secret (16 to 256 characters, printable ASCII without space) in
// keys/<key_file> with mode 0600, replacing it atomically.
status write_job_key(const state_dir& dir, std::string_view key_file, std::string_view key);
// Reads a job's secret. Refuses a file that is not a regular file, that group or others
// may read, or whose contents are not a valid secret; a trailing newline is dropped.
result<std::string> read_job_key(const state_dir& dir, std::string_view key_file);

// Flags a service to be started (creates start/<service>); taking the flag clears it and
// tells whether it was set.
status request_start(const state_dir& dir, std::string_view service);
result<bool> take_start_request(const state_dir& dir, std::string_view service);

class marker_pool;

// A request in flight, counted by the scheduler and by routing. The marker file is created
// under an idle name ("+..."), flock'ed, then renamed into view, so a reader never sees one
// that is not held. The flock goes away with the process, so a killed gate leaks nothing:
// counting removes visible markers nobody holds, and sweep_idle_markers the idle files of
// processes that are gone.
// Thread safety: one owner; distinct markers may be used from any thread.
class inflight_marker {
 public:
  // Creates the marker for `service` with no backend yet. With a pool, the marker reuses one of
  // the pool's idle files (a rename instead of a new file) and goes back to it when it ends.
  static result<inflight_marker> create(const state_dir& dir, std::string_view service,
                                        std::shared_ptr<marker_pool> pool = nullptr);

  inflight_marker(inflight_marker&&) noexcept = default;
  inflight_marker& operator=(inflight_marker&&) noexcept;
  inflight_marker(const inflight_marker&) = delete;
  inflight_marker& operator=(const inflight_marker&) = delete;
  ~inflight_marker();

  // Records which backend (job) the request is now sent to.
  status set_backend(std::string_view job);

 private:
  inflight_marker(std::filesystem::path dir, std::string service, std::string unique, unique_fd fd,
                  std::shared_ptr<marker_pool> pool);
  void remove() noexcept;

  std::filesystem::path dir_;
  std::string service_;
  std::string unique_;
  std::string job_;
  unique_fd fd_;
  std::shared_ptr<marker_pool> pool_;
};

// The marker files of a long-lived gate process (a session gate carries many requests): a
// request that ends renames its marker back to an idle name and keeps its file and lock for the
// next one, so a request costs the folder three renames and no new file. close() (or the
// destructor) deletes the idle files; markers that end after it are deleted as without a pool.
// Thread safety: all members may be called from any thread.
class marker_pool {
 public:
  marker_pool() = default;
  marker_pool(const marker_pool&) = delete;
  marker_pool& operator=(const marker_pool&) = delete;
  ~marker_pool();

  void close() noexcept;
  std::size_t idle() const;

 private:
  friend class inflight_marker;
  struct idle_file {
    std::filesystem::path dir;
    std::string unique;
    unique_fd fd;
  };
  std::optional<idle_file> take(const std::filesystem::path& dir);
  // False when the pool is closed: the caller deletes the file itself.
  bool give(idle_file file);

  mutable std::mutex mutex_;
  std::vector<idle_file> idle_;
  bool closed_ = false;
};

// Deletes the idle marker files ("+...") of processes that are gone: unlocked and older than a
// minute. The scheduler calls it each tick; counting never reads idle files.
status sweep_idle_markers(const state_dir& dir);

// Requests in flight, from the held markers.
struct inflight_counts {
  std::map<std::string, std::int64_t> by_service;
  std::map<std::string, std::int64_t> by_job;
};

// Counts the markers that a live process holds and deletes those that none holds.
result<inflight_counts> count_inflight(const state_dir& dir);

}  // namespace chatai::slurm
