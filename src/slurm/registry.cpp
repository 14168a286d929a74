// The registry document, its atomic replacement, job keys, start flags and in-flight markers.
#include "chatai/slurm/registry.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <mutex>
#include <set>
#include <unordered_set>

#include "chatai/core/config.hpp"
#include "chatai/core/json.hpp"

namespace chatai::slurm {

namespace fs = std::filesystem;

namespace {

bool all_of_charset(std::string_view s, std::string_view extra) noexcept {
  for (const char c : s) {
    const bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    if (!alnum && extra.find(c) == std::string_view::npos) return false;
  }
  return true;
}

bool is_dot_name(std::string_view s) noexcept { return s == "." || s == ".."; }

bool valid_key_file(std::string_view name) noexcept {
  return !name.empty() && name.size() <= 128 && name.front() != '.' && all_of_charset(name, "._-");
}

bool valid_secret(std::string_view key) noexcept {
  if (key.size() < 16 || key.size() > 256) return false;
  for (const char c : key)
    if (c <= 0x20 || c >= 0x7F) return false;
  return true;
}

error os_error(const fs::path& path, std::string_view what) {
  const int e = errno;
  const errc code = e == ENOENT ? errc::not_found : (e == EACCES || e == EPERM) ? errc::permission_denied : errc::io_error;
  return error(code, path.string() + ": " + std::string(what) + ": " + std::strerror(e));
}

status write_all(int fd, std::string_view data, const fs::path& path) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return os_error(path, "write");
    }
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return {};
}

std::string unique_suffix() {
  static std::atomic<std::uint64_t> counter{0};
  thread_local std::mt19937_64 rng(std::random_device{}());
  return std::to_string(::getpid()) + "-" + std::to_string(counter++) + "-" + std::to_string(rng() % 1000000007);
}

status fsync_dir(const fs::path& dir) {
  unique_fd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) return os_error(dir, "open");
  if (::fsync(fd.get()) != 0) return os_error(dir, "fsync");
  return {};
}

}  // namespace

status replace_file_atomically(const fs::path& path, std::string_view contents) {
  const fs::path temp = path.parent_path() / ("." + path.filename().string() + "." + unique_suffix());
  unique_fd fd(::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd) return os_error(temp, "create");
  auto written = write_all(fd.get(), contents, temp);
  if (written && ::fsync(fd.get()) != 0) written = os_error(temp, "fsync");
  if (written && ::rename(temp.c_str(), path.c_str()) != 0) written = os_error(path, "rename");
  if (!written) {
    ::unlink(temp.c_str());
    return written;
  }
  return fsync_dir(path.parent_path());
}

bool valid_job_id(std::string_view id) noexcept {
  return !id.empty() && id.size() <= 64 && !is_dot_name(id) && all_of_charset(id, "._-");
}

bool valid_host(std::string_view host) noexcept {
  return !host.empty() && host.size() <= 253 && !is_dot_name(host) && host.front() != '-' && host.front() != '.' &&
         all_of_charset(host, ".-");
}

std::string_view to_string(backend_state state) noexcept {
  switch (state) {
    case backend_state::starting: return "starting";
    case backend_state::ready: return "ready";
    case backend_state::draining: return "draining";
  }
  return "starting";
}

const service_entry* registry::find_service(std::string_view id) const noexcept {
  for (const auto& s : services)
    if (s.id == id) return &s;
  return nullptr;
}

result<registry> parse_registry(std::string_view text) {
  registry reg;
  std::set<std::string, std::less<>> service_ids, job_ids;
  auto st = config::load_text(text, "registry", [&](json::reader& r) {
    std::int64_t version = 0;
    r.required_in_range("version", version, 1, 1);
    r.required_in_range("generation", reg.generation, 0, INT64_MAX);
    r.object_array("services", true, [&](json::reader& s, std::size_t) {
      service_entry e;
      s.required("id", e.id);
      s.optional("models", e.models);
      s.optional("can_scale_from_zero", e.can_scale_from_zero);
      s.optional_in_range("pending", e.pending, 0, 1000000);
      if (s.failed()) return;
      if (!valid_service_id(e.id)) return s.fail("id", "is not a valid service id");
      if (!service_ids.insert(e.id).second) return s.fail("id", "appears twice: " + e.id);
      for (const auto& m : e.models)
        if (!valid_model_name(m)) return s.fail("models", "holds an invalid model name");
      reg.services.push_back(std::move(e));
    });
    r.object_array("backends", true, [&](json::reader& b, std::size_t) {
      backend_entry e;
      std::string state;
      b.required("job", e.job);
      b.required("service", e.service);
      b.required("host", e.host);
      b.required_in_range("port", e.port, 1, 65535);
      b.required("state", state);
      b.required("key_file", e.key_file);
      if (b.failed()) return;
      if (!valid_job_id(e.job)) return b.fail("job", "is not a valid job id");
      if (!job_ids.insert(e.job).second) return b.fail("job", "appears twice: " + e.job);
      if (!service_ids.count(e.service)) return b.fail("service", "names no service of the registry");
      if (!valid_host(e.host)) return b.fail("host", "is not a valid host name");
      if (!valid_key_file(e.key_file)) return b.fail("key_file", "is not a valid file name");
      if (state == "ready") e.state = backend_state::ready;
      else if (state == "starting") e.state = backend_state::starting;
      else if (state == "draining") e.state = backend_state::draining;
      else return b.fail("state", "must be ready, starting or draining");
      reg.backends.push_back(std::move(e));
    });
  });
  if (!st) return std::move(st).err();
  return reg;
}

std::string to_json(const registry& reg) {
  std::string out = "{\"version\":1,\"generation\":" + std::to_string(reg.generation) + ",\"services\":[";
  for (std::size_t i = 0; i < reg.services.size(); ++i) {
    const auto& s = reg.services[i];
    if (i) out += ',';
    out += "{\"id\":";
    json::append_quoted(out, s.id);
    out += ",\"models\":";
    json::append_string_array(out, s.models);
    out += ",\"can_scale_from_zero\":";
    out += s.can_scale_from_zero ? "true" : "false";
    out += ",\"pending\":" + std::to_string(s.pending) + "}";
  }
  out += "],\"backends\":[";
  for (std::size_t i = 0; i < reg.backends.size(); ++i) {
    const auto& b = reg.backends[i];
    if (i) out += ',';
    out += "{\"job\":";
    json::append_quoted(out, b.job);
    out += ",\"service\":";
    json::append_quoted(out, b.service);
    out += ",\"host\":";
    json::append_quoted(out, b.host);
    out += ",\"port\":" + std::to_string(b.port) + ",\"state\":";
    json::append_quoted(out, to_string(b.state));
    out += ",\"key_file\":";
    json::append_quoted(out, b.key_file);
    out += '}';
  }
  out += "]}\n";
  return out;
}

namespace {

// A folder of the state directory must be one that only this user controls: a real folder (a
// symbolic link would send the gate's reads and writes wherever it points), owned by the
// effective user, and not writable by group or others (who could plant keys, markers or a
// registry there).
status check_folder(const fs::path& dir, const struct stat& info) {
  if (S_ISLNK(info.st_mode))
    return error(errc::permission_denied, dir.string() + ": is a symbolic link; the state folder and its "
                                          "subfolders must be real folders");
  if (!S_ISDIR(info.st_mode)) return error(errc::permission_denied, dir.string() + ": is not a folder");
  static const uid_t euid = ::geteuid();  // a process of chatai never changes its user
  if (info.st_uid != euid)
    return error(errc::permission_denied, dir.string() + ": is owned by uid " + std::to_string(info.st_uid) +
                                          ", not by the user running this (uid " + std::to_string(euid) + ")");
  if (info.st_mode & (S_IWGRP | S_IWOTH)) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(info.st_mode & 07777));
    return error(errc::permission_denied, dir.string() + ": is writable by group or others (mode " + mode +
                                          "); chmod go-w it");
  }
  return {};
}

}  // namespace

status ensure_dir(const fs::path& dir) {
  // Looked at first: the folders exist nearly always, and the gate ensures several per request.
  struct stat info{};
  if (::lstat(dir.c_str(), &info) == 0) return check_folder(dir, info);
  if (errno != ENOENT) return os_error(dir, "lstat");
  if (::mkdir(dir.c_str(), 0700) == 0) return {};
  if (errno != EEXIST) return os_error(dir, "mkdir");
  if (::lstat(dir.c_str(), &info) != 0) return os_error(dir, "lstat");
  return check_folder(dir, info);
}

status check_state_dir(const state_dir& dir) {
  for (const fs::path& folder : {dir.root(), dir.keys_dir(), dir.inflight_dir(), dir.breakers_dir(), dir.start_dir(),
                                 dir.endpoints_dir(), dir.local_jobs_dir(), dir.logs_dir()}) {
    struct stat info{};
    if (::lstat(folder.c_str(), &info) != 0) {
      if (errno == ENOENT) continue;  // made (and checked) by the first writer that needs it
      return os_error(folder, "lstat");
    }
    CHATAI_RETURN_IF_ERROR(check_folder(folder, info));
  }
  return {};
}

result<registry> read_registry(const state_dir& dir) {
  auto text = config::read_file(dir.registry_file());
  if (!text) return std::move(text).err();
  auto reg = parse_registry(*text);
  if (!reg) return reg.err().with_context(dir.registry_file().string());
  return reg;
}

status write_registry(const state_dir& dir, registry& reg) {
  CHATAI_RETURN_IF_ERROR(ensure_dir(dir.root()));
  const fs::path lock_path = dir.registry_lock_file();
  unique_fd lock(::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!lock) return os_error(lock_path, "open");
  while (::flock(lock.get(), LOCK_EX) != 0)
    if (errno != EINTR) return os_error(lock_path, "flock");
  std::int64_t stored = 0;
  if (auto current = read_registry(dir)) stored = current->generation;
  reg.generation = std::max(reg.generation, stored + 1);
  return replace_file_atomically(dir.registry_file(), to_json(reg));
}

status write_job_key(const state_dir& dir, std::string_view key_file, std::string_view key) {
  if (!valid_key_file(key_file)) return error(errc::invalid_argument, "not a valid key file name");
  if (!valid_secret(key)) return error(errc::invalid_argument, "a job key must be 16 to 256 printable characters");
  CHATAI_RETURN_IF_ERROR(ensure_dir(dir.root()));
  CHATAI_RETURN_IF_ERROR(ensure_dir(dir.keys_dir()));
  return replace_file_atomically(dir.keys_dir() / std::string(key_file), key);
}

result<std::string> read_job_key(const state_dir& dir, std::string_view key_file) {
  if (!valid_key_file(key_file)) return error(errc::invalid_argument, "not a valid key file name");
  const fs::path path = dir.keys_dir() / std::string(key_file);
  unique_fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) return os_error(path, "open");
  struct stat info{};
  if (::fstat(fd.get(), &info) != 0) return os_error(path, "stat");
  if (!S_ISREG(info.st_mode)) return error(errc::permission_denied, path.string() + ": not a regular file");
  if (info.st_mode & 077) return error(errc::permission_denied, path.string() + ": readable by group or others");
  char buffer[260];
  std::size_t size = 0;
  for (;;) {
    const ssize_t n = ::read(fd.get(), buffer + size, sizeof buffer - size);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return os_error(path, "read");
    if (n == 0 || size + static_cast<std::size_t>(n) == sizeof buffer) {
      size += static_cast<std::size_t>(n);
      break;
    }
    size += static_cast<std::size_t>(n);
  }
  std::string_view key(buffer, size);
  if (!key.empty() && key.back() == '\n') key.remove_suffix(1);
  if (!valid_secret(key)) return error(errc::invalid_argument, path.string() + ": not a valid job key");
  return std::string(key);
}

status request_start(const state_dir& dir, std::string_view service) {
  if (!valid_service_id(service)) return error(errc::invalid_argument, "not a valid service id");
  CHATAI_RETURN_IF_ERROR(ensure_dir(dir.root()));
  CHATAI_RETURN_IF_ERROR(ensure_dir(dir.start_dir()));
  const fs::path path = dir.start_dir() / std::string(service);
  unique_fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd) return os_error(path, "create");
  return {};
}

result<bool> take_start_request(const state_dir& dir, std::string_view service) {
  if (!valid_service_id(service)) return error(errc::invalid_argument, "not a valid service id");
  const fs::path path = dir.start_dir() / std::string(service);
  if (::unlink(path.c_str()) == 0) return true;
  if (errno == ENOENT) return false;
  return os_error(path, "unlink");
}

namespace {

// Marker names: <service>@<job>@<unique>; '@' appears in neither a service nor a job id. Idle
// files (a pool's, or one being made) are "+<unique>"; counting skips them unread.
std::string marker_name(std::string_view service, std::string_view job, std::string_view unique) {
  std::string name(service);
  name += '@';
  name += job;
  name += '@';
  name += unique;
  return name;
}

std::string idle_name(std::string_view unique) { return "+" + std::string(unique); }

// The marker files this process holds (device, inode): counting takes them as held without a
// lock test. A file is in the set exactly while this process holds its open, locked descriptor.
struct own_files {
  std::mutex mutex;
  std::set<std::pair<dev_t, ino_t>> held;
};
own_files& own() {
  static own_files* files = new own_files;  // never freed: used until _exit
  return *files;
}
std::optional<std::pair<dev_t, ino_t>> identity(int fd) {
  struct stat info{};
  if (::fstat(fd, &info) != 0) return std::nullopt;
  return std::pair{info.st_dev, info.st_ino};
}
void note_own(int fd, bool held) {
  const auto id = identity(fd);
  if (!id) return;
  std::lock_guard lock(own().mutex);
  if (held) own().held.insert(*id);
  else own().held.erase(*id);
}

}  // namespace

inflight_marker::inflight_marker(fs::path dir, std::string service, std::string unique, unique_fd fd,
                                 std::shared_ptr<marker_pool> pool)
    : dir_(std::move(dir)), service_(std::move(service)), unique_(std::move(unique)), fd_(std::move(fd)),
      pool_(std::move(pool)) {}

result<inflight_marker> inflight_marker::create(const state_dir& dir, std::string_view service,
                                                std::shared_ptr<marker_pool> pool) {
  if (!valid_service_id(service)) return error(errc::invalid_argument, "not a valid service id");
  const fs::path folder = dir.inflight_dir();
  if (pool) {
    if (auto file = pool->take(folder)) {
      const fs::path idle = folder / idle_name(file->unique);
      const fs::path visible = folder / marker_name(service, "", file->unique);
      if (::rename(idle.c_str(), visible.c_str()) == 0)
        return inflight_marker(folder, std::string(service), std::move(file->unique), std::move(file->fd), pool);
      // Not where it was left (the folder was replaced): this file is done with.
      note_own(file->fd.get(), false);
      ::unlink(idle.c_str());
    }
  }
  CHATAI_RETURN_IF_ERROR(ensure_dir(dir.root()));
  CHATAI_RETURN_IF_ERROR(ensure_dir(folder));
  std::string unique = unique_suffix();
  const fs::path idle = folder / idle_name(unique);
  unique_fd fd(::open(idle.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd) return os_error(idle, "create");
  // Waits out a sweep that is testing this young file with a shared lock (microseconds).
  while (::flock(fd.get(), LOCK_EX) != 0) {
    if (errno == EINTR) continue;
    const error failed = os_error(idle, "flock");
    ::unlink(idle.c_str());
    return failed;
  }
  const fs::path visible = folder / marker_name(service, "", unique);
  if (::rename(idle.c_str(), visible.c_str()) != 0) {
    const error failed = os_error(visible, "rename");
    ::unlink(idle.c_str());
    return failed;
  }
  note_own(fd.get(), true);
  return inflight_marker(folder, std::string(service), std::move(unique), std::move(fd), std::move(pool));
}

inflight_marker& inflight_marker::operator=(inflight_marker&& other) noexcept {
  if (this != &other) {
    remove();
    dir_ = std::move(other.dir_);
    service_ = std::move(other.service_);
    unique_ = std::move(other.unique_);
    job_ = std::move(other.job_);
    fd_ = std::move(other.fd_);
    pool_ = std::move(other.pool_);
  }
  return *this;
}

inflight_marker::~inflight_marker() { remove(); }

void inflight_marker::remove() noexcept {
  if (!fd_) return;
  const fs::path visible = dir_ / marker_name(service_, job_, unique_);
  if (pool_) {
    const fs::path idle = dir_ / idle_name(unique_);
    if (::rename(visible.c_str(), idle.c_str()) == 0) {
      if (pool_->give(marker_pool::idle_file{dir_, unique_, std::move(fd_)})) return;
      // The pool closed meanwhile: the file goes as without one.
      ::unlink(idle.c_str());
      return;
    }
  }
  note_own(fd_.get(), false);
  ::unlink(visible.c_str());
  fd_.reset();
}

status inflight_marker::set_backend(std::string_view job) {
  if (!valid_job_id(job)) return error(errc::invalid_argument, "not a valid job id");
  const fs::path from = dir_ / marker_name(service_, job_, unique_);
  const fs::path to = dir_ / marker_name(service_, job, unique_);
  if (::rename(from.c_str(), to.c_str()) != 0) return os_error(to, "rename");
  job_ = std::string(job);
  return {};
}

marker_pool::~marker_pool() { close(); }

void marker_pool::close() noexcept {
  std::vector<idle_file> files;
  {
    std::lock_guard lock(mutex_);
    closed_ = true;
    files.swap(idle_);
  }
  for (auto& f : files) {
    note_own(f.fd.get(), false);
    ::unlink((f.dir / idle_name(f.unique)).c_str());
  }
}

std::size_t marker_pool::idle() const {
  std::lock_guard lock(mutex_);
  return idle_.size();
}

std::optional<marker_pool::idle_file> marker_pool::take(const fs::path& dir) {
  std::lock_guard lock(mutex_);
  for (auto it = idle_.rbegin(); it != idle_.rend(); ++it) {
    if (it->dir != dir) continue;
    idle_file file = std::move(*it);
    idle_.erase(std::next(it).base());
    return file;
  }
  return std::nullopt;
}

bool marker_pool::give(idle_file file) {
  {
    std::lock_guard lock(mutex_);
    if (!closed_) {
      idle_.push_back(std::move(file));
      return true;
    }
  }
  note_own(file.fd.get(), false);
  return false;
}

status sweep_idle_markers(const state_dir& dir) {
  const fs::path folder = dir.inflight_dir();
  DIR* listing = ::opendir(folder.c_str());
  if (!listing && errno == ENOENT) return {};
  if (!listing) return os_error(folder, "opendir");
  std::vector<std::string> names;
  errno = 0;
  while (const dirent* d = ::readdir(listing)) {
    const std::string_view name(d->d_name);
    // '.' names: files being made by earlier versions, which made markers under a hidden name.
    if (!is_dot_name(name) && (name.front() == '+' || name.front() == '.')) names.emplace_back(name);
  }
  ::closedir(listing);
  const auto now = std::chrono::system_clock::now();
  for (const auto& name : names) {
    // Its maker locks a new file at once and a pool keeps its files locked, so only an old
    // unlocked one belongs to a process that is gone. The lock test of a young one would only
    // delay its maker (who waits for the lock), but a young unlocked one is left alone.
    const fs::path path = folder / name;
    unique_fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK));
    if (!fd || ::flock(fd.get(), LOCK_SH | LOCK_NB) != 0) continue;
    struct stat info{};
    if (::fstat(fd.get(), &info) != 0) continue;
    const auto changed = std::chrono::system_clock::from_time_t(info.st_mtim.tv_sec);
    if (now - changed > std::chrono::minutes(1)) ::unlink(path.c_str());
  }
  return {};
}

namespace {

// Markers in a folder beyond which the locks are looked up in /proc/locks at once rather than
// tested one by one (an open, a lock test and a close each).
constexpr std::size_t markers_tested_one_by_one = 8;

// The inodes on device `dev` that some process holds an flock on, from /proc/locks (lines like
// "1: FLOCK  ADVISORY  WRITE 4321 fe:00:10953284 0 EOF"; waiters, "1: -> FLOCK ...", hold
// nothing). Empty when it cannot be read: every marker is then tested by itself.
std::unordered_set<ino_t> flocked_inodes(dev_t dev) {
  std::unordered_set<ino_t> held;
  auto text = config::read_file("/proc/locks");
  if (!text) return held;
  // Fields split by blanks, read without copying (the file has a line per lock on the machine).
  const auto next_field = [](std::string_view& line) {
    const auto start = line.find_first_not_of(' ');
    if (start == std::string_view::npos) {
      line = {};
      return std::string_view{};
    }
    line.remove_prefix(start);
    const auto end = line.find(' ');
    const auto field = line.substr(0, end);
    line = end == std::string_view::npos ? std::string_view{} : line.substr(end);
    return field;
  };
  const auto hex = [](std::string_view s, unsigned& out) {
    return std::from_chars(s.data(), s.data() + s.size(), out, 16).ec == std::errc() ;
  };
  std::string_view rest(*text);
  while (!rest.empty()) {
    const auto end = rest.find('\n');
    std::string_view line = rest.substr(0, end);
    rest = end == std::string_view::npos ? std::string_view() : rest.substr(end + 1);
    next_field(line);  // "1:"
    if (next_field(line) != "FLOCK") continue;  // also skips waiters ("->")
    next_field(line);                           // ADVISORY
    next_field(line);                           // WRITE or READ
    next_field(line);                           // the holder's pid
    const auto id = next_field(line);           // major:minor:inode, the numbers of the device in hex
    const auto first = id.find(':');
    const auto second = first == std::string_view::npos ? std::string_view::npos : id.find(':', first + 1);
    if (second == std::string_view::npos) continue;
    unsigned major_dev = 0, minor_dev = 0;
    unsigned long long inode = 0;
    const auto inode_text = id.substr(second + 1);
    if (!hex(id.substr(0, first), major_dev) || !hex(id.substr(first + 1, second - first - 1), minor_dev) ||
        std::from_chars(inode_text.data(), inode_text.data() + inode_text.size(), inode).ec != std::errc())
      continue;
    if (makedev(major_dev, minor_dev) == dev) held.insert(static_cast<ino_t>(inode));
  }
  return held;
}

// Whether the marker at `path` is held (its lock cannot be shared).
bool marker_held(const fs::path& path, bool& gone) {
  unique_fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK));
  gone = !fd;
  return fd && ::flock(fd.get(), LOCK_SH | LOCK_NB) != 0;
}

}  // namespace

namespace {

// Markers of other processes seen held lately, by (device, inode): tested again once this long
// has passed. A marker whose holder died meanwhile is counted until then: demand may read high
// for a second after a crash, never low. A reused file (a pool's) keeps its inode, so a session
// gate tests the markers of other sessions about once a second each instead of at every count.
constexpr auto held_recently = std::chrono::seconds(1);

struct seen_held {
  std::mutex mutex;
  std::map<std::pair<dev_t, ino_t>, std::chrono::steady_clock::time_point> at;
  std::chrono::steady_clock::time_point pruned{};
};
seen_held& seen() {
  static seen_held* cache = new seen_held;  // never freed: used until _exit
  return *cache;
}

}  // namespace

result<inflight_counts> count_inflight(const state_dir& dir) {
  inflight_counts counts;
  const fs::path folder = dir.inflight_dir();
  DIR* listing = ::opendir(folder.c_str());
  if (!listing && errno == ENOENT) return counts;
  if (!listing) return os_error(folder, "opendir");
  struct entry {
    std::string name;
    ino_t inode;
    bool known = false;  // held, without a test
  };
  std::vector<entry> visible;
  struct stat folder_info{};
  const bool have_device = ::fstat(::dirfd(listing), &folder_info) == 0;
  errno = 0;
  while (const dirent* d = ::readdir(listing)) {
    const std::string_view name(d->d_name);
    // Idle files and files being made ('+'; '.' from earlier versions) are no requests.
    if (name.front() == '.' || name.front() == '+') continue;
    visible.push_back({std::string(name), d->d_ino});
  }
  ::closedir(listing);

  const auto now = std::chrono::steady_clock::now();
  std::size_t unknown = visible.size();
  if (have_device) {
    {
      std::lock_guard lock(own().mutex);
      for (auto& e : visible) e.known = own().held.count({folder_info.st_dev, e.inode}) > 0;
    }
    std::lock_guard lock(seen().mutex);
    auto& at = seen().at;
    if (now - seen().pruned > held_recently) {
      for (auto it = at.begin(); it != at.end();) it = now - it->second > held_recently ? at.erase(it) : std::next(it);
      seen().pruned = now;
    }
    unknown = 0;
    for (auto& e : visible) {
      if (!e.known) {
        const auto found = at.find({folder_info.st_dev, e.inode});
        e.known = found != at.end() && now - found->second <= held_recently;
      }
      if (!e.known) ++unknown;
    }
  }

  // A marker is made whole and locked before it becomes visible, so one listed here and locked
  // when /proc/locks is read is counted; one not found there is tested by itself.
  std::unordered_set<ino_t> held_inodes;
  if (have_device && unknown > markers_tested_one_by_one) held_inodes = flocked_inodes(folder_info.st_dev);
  std::vector<ino_t> found_held;
  for (const auto& [name, inode, known] : visible) {
    if (!known) {
      if (!held_inodes.count(inode)) {
        bool gone = false;
        const fs::path path = folder / name;
        if (!marker_held(path, gone)) {
          if (!gone) ::unlink(path.c_str());  // its holder has died
          continue;
        }
      }
      found_held.push_back(inode);
    }
    const auto first = name.find('@');
    const auto second = first == std::string::npos ? std::string::npos : name.find('@', first + 1);
    if (second == std::string::npos) continue;
    ++counts.by_service[name.substr(0, first)];
    if (second > first + 1) ++counts.by_job[name.substr(first + 1, second - first - 1)];
  }
  if (have_device && !found_held.empty()) {
    std::lock_guard lock(seen().mutex);
    for (const ino_t inode : found_held) seen().at[{folder_info.st_dev, inode}] = now;
  }
  return counts;
}

}  // namespace chatai::slurm
