// The scheduler tick: listing, adoption, parallel probes, demand, scaling, rotation, registry.
#include "chatai/slurm/scheduler.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/random.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "chatai/core/clock.hpp"
#include "chatai/core/config.hpp"
#include "chatai/core/http_client.hpp"
#include "chatai/core/json.hpp"
#include "chatai/core/log.hpp"
#include "chatai/core/unique_fd.hpp"
#include "chatai/slurm/registry.hpp"

namespace chatai::slurm {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using std::chrono::seconds;

namespace {

// A draining job is cancelled once it has had no request in flight for this long after it
// left the registry, so that a gate holding the previous registry has finished picking.
constexpr std::int64_t drain_grace_ms = 5000;
constexpr std::size_t max_probe_threads = 32;
constexpr std::size_t token_length = 16;


std::string_view to_string(launcher_kind kind) { return kind == launcher_kind::local ? "local" : "slurm"; }

result<std::string> random_hex(std::size_t bytes) {
  std::string raw(bytes, '\0');
  std::size_t got = 0;
  while (got < bytes) {
    const ssize_t n = ::getrandom(raw.data() + got, bytes - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return error(errc::io_error, std::string("getrandom: ") + std::strerror(errno));
    got += static_cast<std::size_t>(n);
  }
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  for (const unsigned char b : raw) {
    out += hex[b >> 4];
    out += hex[b & 15];
  }
  return out;
}

bool valid_token(std::string_view token) {
  return token.size() == token_length &&
         std::all_of(token.begin(), token.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

// Slurm states after which a job serves nothing and will leave the listing.
bool is_final_state(std::string_view state) {
  static constexpr std::string_view finals[] = {"COMPLETING", "COMPLETED", "CANCELLED", "FAILED", "TIMEOUT",
                                                "NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE", "OUT_OF_MEMORY",
                                                "SPECIAL_EXIT", "REVOKED", "STOPPED", "SUSPENDED"};
  return std::find(std::begin(finals), std::end(finals), state) != std::end(finals);
}

result<job_phase> parse_phase(std::string_view text) {
  for (const auto p : {job_phase::pending, job_phase::starting, job_phase::ready, job_phase::draining, job_phase::stopping})
    if (to_string(p) == text) return p;
  return error(errc::parse_error, "unknown job phase \"" + std::string(text) + "\"");
}

// The scheduler's record of one job, kept in scheduler.json between ticks.
struct job_record {
  std::string job, service, token;
  launcher_kind launcher = launcher_kind::slurm;
  job_phase phase = job_phase::pending;
  std::string queue_state;
  std::string host;
  std::int64_t port = 0;
  std::int64_t time_left_s = -1;  // -1: unknown or unlimited
  std::int64_t time_limit_s = -1;
  std::int64_t observed_ms = 0;   // when time_left_s was listed
  std::int64_t submitted_ms = 0;
  std::int64_t running_since_ms = 0;
  std::int64_t draining_since_ms = 0;
  std::int64_t failed_probes = 0;
  std::int64_t in_flight = 0;
  std::string replaced_by;

  std::optional<std::int64_t> time_left_at(std::int64_t now_ms) const {
    if (time_left_s < 0) return std::nullopt;
    return std::max<std::int64_t>(0, time_left_s - (now_ms - observed_ms) / 1000);
  }
};

struct service_record {
  std::string id;
  double demand = 0;
  std::int64_t last_active_ms = 0;
  std::int64_t target = 0;
  std::int64_t in_flight = 0;
  bool listing_known = true;
};

struct scheduler_state {
  std::int64_t last_tick_ms = 0;
  std::vector<service_record> services;
  std::vector<job_record> jobs;
};

result<scheduler_state> parse_state(std::string_view text, const std::string& name) {
  scheduler_state st;
  auto loaded = config::load_text(text, name, [&](json::reader& r) {
    std::int64_t version = 0;
    r.required_in_range("version", version, 1, 1);
    r.required("last_tick_ms", st.last_tick_ms);
    r.object_array("services", true, [&](json::reader& s, std::size_t) {
      service_record rec;
      s.required("id", rec.id);
      s.required("demand", rec.demand);
      s.required("last_active_ms", rec.last_active_ms);
      s.required("target", rec.target);
      s.required("in_flight", rec.in_flight);
      s.required("listing_known", rec.listing_known);
      st.services.push_back(std::move(rec));
    });
    r.object_array("jobs", true, [&](json::reader& j, std::size_t) {
      job_record rec;
      std::string launcher, phase;
      j.required("job", rec.job);
      j.required("service", rec.service);
      j.required("token", rec.token);
      j.required("launcher", launcher);
      j.required("phase", phase);
      j.required("queue_state", rec.queue_state);
      j.required("host", rec.host);
      j.required("port", rec.port);
      j.required("time_left_s", rec.time_left_s);
      j.required("time_limit_s", rec.time_limit_s);
      j.required("observed_ms", rec.observed_ms);
      j.required("submitted_ms", rec.submitted_ms);
      j.required("running_since_ms", rec.running_since_ms);
      j.required("draining_since_ms", rec.draining_since_ms);
      j.required("failed_probes", rec.failed_probes);
      j.required("in_flight", rec.in_flight);
      j.required("replaced_by", rec.replaced_by);
      if (j.failed()) return;
      rec.launcher = launcher == "local" ? launcher_kind::local : launcher_kind::slurm;
      auto p = parse_phase(phase);
      if (!p) return j.fail("phase", p.err().message());
      rec.phase = *p;
      if (!valid_job_id(rec.job)) return j.fail("job", "is not a valid job id");
      if (!valid_token(rec.token)) return j.fail("token", "is not a valid token");
      st.jobs.push_back(std::move(rec));
    });
  });
  if (!loaded) return std::move(loaded).err();
  return st;
}

std::string state_to_json(const scheduler_state& st) {
  std::string out = "{\"version\":1,\"last_tick_ms\":" + std::to_string(st.last_tick_ms) + ",\"services\":[";
  for (std::size_t i = 0; i < st.services.size(); ++i) {
    const auto& s = st.services[i];
    if (i) out += ',';
    out += "{\"id\":";
    json::append_quoted(out, s.id);
    char demand[32];
    std::snprintf(demand, sizeof demand, "%.6g", s.demand);
    out += std::string(",\"demand\":") + demand + ",\"last_active_ms\":" + std::to_string(s.last_active_ms) +
           ",\"target\":" + std::to_string(s.target) + ",\"in_flight\":" + std::to_string(s.in_flight) +
           ",\"listing_known\":" + (s.listing_known ? "true" : "false") + "}";
  }
  out += "],\"jobs\":[";
  for (std::size_t i = 0; i < st.jobs.size(); ++i) {
    const auto& j = st.jobs[i];
    if (i) out += ',';
    const auto field = [&out](std::string_view key, std::string_view value) {
      out += ",\"";
      out += key;
      out += "\":";
      json::append_quoted(out, value);
    };
    const auto number = [&out](std::string_view key, std::int64_t value) {
      out += ",\"";
      out += key;
      out += "\":" + std::to_string(value);
    };
    out += "{\"job\":";
    json::append_quoted(out, j.job);
    field("service", j.service);
    field("token", j.token);
    field("launcher", to_string(j.launcher));
    field("phase", to_string(j.phase));
    field("queue_state", j.queue_state);
    field("host", j.host);
    number("port", j.port);
    number("time_left_s", j.time_left_s);
    number("time_limit_s", j.time_limit_s);
    number("observed_ms", j.observed_ms);
    number("submitted_ms", j.submitted_ms);
    number("running_since_ms", j.running_since_ms);
    number("draining_since_ms", j.draining_since_ms);
    number("failed_probes", j.failed_probes);
    number("in_flight", j.in_flight);
    field("replaced_by", j.replaced_by);
    out += '}';
  }
  out += "]}\n";
  return out;
}

// The recorded state; none yet is an empty one.
result<scheduler_state> load_state(const state_dir& dir) {
  auto text = config::read_file(dir.scheduler_state_file());
  if (!text) {
    if (text.err().code() == errc::not_found) return scheduler_state{};
    return std::move(text).err();
  }
  return parse_state(*text, dir.scheduler_state_file().string());
}

// The host and port a job's server wrote, once it has.
std::optional<std::pair<std::string, std::int64_t>> read_endpoint(const state_dir& dir, const std::string& token) {
  const fs::path path = dir.endpoints_dir() / (token + ".json");
  std::string host;
  std::int64_t port = 0;
  auto st = config::load(path, [&](json::reader& r) {
    r.allow_unknown();
    r.required("host", host);
    r.required_in_range("port", port, 1, 65535);
  });
  if (!st) {
    if (st.err().code() != errc::not_found) log::warn("job endpoint file unreadable", {{"error", st.err().message()}});
    return std::nullopt;
  }
  if (!valid_host(host)) {
    log::warn("job endpoint names an invalid host", {{"file", path.string()}});
    return std::nullopt;
  }
  return std::pair{host, port};
}

struct probe_task {
  std::string host;
  std::int64_t port = 0;
  std::string path;
  std::string key;
  milliseconds timeout{0};
  bool ok = false;
  std::string failure;
};

void run_probe(probe_task& t) {
  const auto address = http::resolve_address(t.host);
  if (!address) {
    t.failure = "host does not resolve";
    return;
  }
  http::client_request req;
  req.host = *address;
  req.port = static_cast<std::uint16_t>(t.port);
  req.target = t.path;
  req.headers.add("Authorization", "Bearer " + t.key);
  http::client_options options;
  options.connect_timeout = t.timeout;
  options.first_byte_timeout = t.timeout;
  options.idle_timeout = t.timeout;
  auto r = http::fetch(req, options);
  if (!r) {
    t.failure = r.err().message();
    return;
  }
  t.ok = r->status == 200;
  if (!t.ok) t.failure = "HTTP " + std::to_string(r->status);
}

// Runs the probes on a few threads at once.
void run_probes(std::vector<probe_task>& tasks) {
  std::atomic<std::size_t> next{0};
  const auto worker = [&] {
    for (std::size_t i = next++; i < tasks.size(); i = next++) run_probe(tasks[i]);
  };
  std::vector<std::thread> threads;
  const std::size_t n = std::min(tasks.size(), max_probe_threads);
  for (std::size_t i = 1; i < n; ++i) threads.emplace_back(worker);
  if (n > 0) worker();
  for (auto& t : threads) t.join();
}

std::string replace_all(std::string text, std::string_view from, std::string_view to) {
  for (auto pos = text.find(from); pos != std::string::npos; pos = text.find(from, pos + to.size()))
    text.replace(pos, from.size(), to);
  return text;
}

// The lock that keeps ticks apart; released by the kernel when its holder dies. A short wait
// covers a holder that was just killed while one of its children had not yet dropped the
// inherited descriptor at exec.
result<unique_fd> lock_ticks(const state_dir& dir) {
  const fs::path path = dir.scheduler_lock_file();
  unique_fd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd) return error(errc::io_error, path.string() + ": open: " + std::strerror(errno));
  const auto deadline = std::chrono::steady_clock::now() + milliseconds(250);
  while (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EINTR) continue;
    if (errno != EWOULDBLOCK) return error(errc::io_error, path.string() + ": flock: " + std::strerror(errno));
    if (std::chrono::steady_clock::now() >= deadline) return error(errc::unavailable, "another scheduler tick is running");
    std::this_thread::sleep_for(milliseconds(10));
  }
  return fd;
}

}  // namespace

std::string_view to_string(job_phase phase) noexcept {
  switch (phase) {
    case job_phase::pending: return "pending";
    case job_phase::starting: return "starting";
    case job_phase::ready: return "ready";
    case job_phase::draining: return "draining";
    case job_phase::stopping: return "stopping";
  }
  return "pending";
}

struct scheduler::impl {
  deployment_config config;
  state_dir dir;
  std::unique_ptr<launcher> slurm;
  std::unique_ptr<launcher> local;
  std::mutex mutex;  // one tick at a time within the process; the flock covers other processes

  impl(deployment_config c, std::unique_ptr<launcher> s, std::unique_ptr<launcher> l)
      : config(std::move(c)), dir(config.state_dir), slurm(std::move(s)), local(std::move(l)) {
    if (!slurm) {
      driver_options o;
      o.sbatch = config.sbatch;
      o.squeue = config.squeue;
      o.scancel = config.scancel;
      o.env = config.slurm_env;
      o.timeout = config.slurm_timeout;
      slurm = std::make_unique<slurm_launcher>(std::move(o));
    }
    if (!local) local = std::make_unique<local_launcher>(dir.local_jobs_dir());
  }

  launcher& launcher_of(launcher_kind kind) { return kind == launcher_kind::local ? *local : *slurm; }

  const service_config* find_service(std::string_view id) const {
    for (const auto& s : config.services)
      if (s.id == id) return &s;
    return nullptr;
  }

  chatai::status ensure_layout() {
    for (const auto& d : {dir.root(), dir.keys_dir(), dir.endpoints_dir(), dir.inflight_dir(), dir.start_dir(),
                          dir.logs_dir(), dir.local_jobs_dir()})
      CHATAI_RETURN_IF_ERROR(ensure_dir(d));
    return {};
  }

  // Removes what a job left in the state directory once it is gone.
  void forget_files(const job_record& j) {
    std::error_code ec;
    fs::remove(dir.keys_dir() / j.token, ec);
    fs::remove(dir.endpoints_dir() / (j.token + ".json"), ec);
  }

  // Submits one job of `svc`: its key first, so that the job is adopted if this process dies
  // before recording it.
  result<job_record> submit(const service_config& svc, std::int64_t now) {
    auto token = random_hex(token_length / 2);
    if (!token) return std::move(token).err();
    auto key = random_hex(32);
    if (!key) return std::move(key).err();
    CHATAI_RETURN_IF_ERROR(write_job_key(dir, *token, *key));
    const std::string job_name = config.job_prefix + svc.id + "." + *token;
    std::string script = svc.job_template;
    const std::pair<std::string_view, std::string> values[] = {
        {"{{service}}", svc.id},
        {"{{job_name}}", job_name},
        {"{{state_dir}}", fs::absolute(dir.root()).string()},
        {"{{key_file}}", fs::absolute(dir.keys_dir() / *token).string()},
        {"{{endpoint_file}}", fs::absolute(dir.endpoints_dir() / (*token + ".json")).string()},
        {"{{model}}", svc.models.empty() ? std::string() : svc.models.front()},
    };
    for (const auto& [placeholder, value] : values) script = replace_all(std::move(script), placeholder, value);
    submit_request req;
    req.job_name = job_name;
    req.script = std::move(script);
    req.time_limit = svc.time_limit;
    if (svc.time_min.count() > 0) req.time_min = svc.time_min;
    req.signal_lead = svc.rotation_lead;
    req.output_path = fs::absolute(dir.logs_dir() / (job_name + "-%j.out")).string();
    if (svc.launcher == launcher_kind::slurm) req.extra_args = svc.sbatch_args;
    auto id = launcher_of(svc.launcher).submit(req);
    if (!id) {
      std::error_code ec;
      fs::remove(dir.keys_dir() / *token, ec);
      return std::move(id).err();
    }
    log::info("job submitted", {{"service", svc.id}, {"job", *id}});
    job_record j;
    j.job = std::move(*id);
    j.service = svc.id;
    j.token = std::move(*token);
    j.launcher = svc.launcher;
    j.phase = job_phase::pending;
    j.submitted_ms = now;
    j.observed_ms = now;
    return j;
  }

  bool cancel(job_record& j, std::string_view why) {
    auto st = launcher_of(j.launcher).cancel(j.job, std::nullopt);
    if (!st) {
      log::warn("cancelling a job failed", {{"job", j.job}, {"error", st.err().message()}});
      return false;
    }
    log::info("job cancelled", {{"job", j.job}, {"service", j.service}, {"reason", std::string(why)}});
    j.phase = job_phase::stopping;
    return true;
  }

  // Brings the record in line with one launcher's listing.
  void reconcile(launcher_kind kind, const std::vector<squeue_job>& listed, std::int64_t now, tick_report& report,
                 scheduler_state& st) {
    std::map<std::string, const squeue_job*> by_id;
    for (const auto& l : listed) by_id[l.job_id] = &l;
    std::set<std::string> known;
    std::vector<job_record> kept;
    for (auto& j : st.jobs) {
      if (j.launcher != kind) {
        kept.push_back(std::move(j));
        continue;
      }
      const auto it = by_id.find(j.job);
      if (it == by_id.end()) {
        log::info("job left the queue", {{"job", j.job}, {"service", j.service}, {"phase", std::string(to_string(j.phase))}});
        forget_files(j);
        continue;
      }
      known.insert(j.job);
      const auto& l = *it->second;
      j.queue_state = l.state;
      j.time_left_s = l.time_left.what == slurm_duration::kind::finite ? l.time_left.value.count() : -1;
      j.time_limit_s = l.time_limit.what == slurm_duration::kind::finite ? l.time_limit.value.count() : -1;
      j.observed_ms = now;
      if (is_final_state(l.state)) {
        j.phase = job_phase::stopping;
      } else if (l.state == "RUNNING" && j.phase == job_phase::pending) {
        j.phase = job_phase::starting;
        j.running_since_ms = now;
      }
      kept.push_back(std::move(j));
    }
    st.jobs = std::move(kept);
    for (const auto& l : listed) {
      if (known.count(l.job_id)) continue;
      const std::string rest = l.name.substr(config.job_prefix.size());
      const auto dot = rest.rfind('.');
      const std::string service = dot == std::string::npos ? std::string() : rest.substr(0, dot);
      const std::string token = dot == std::string::npos ? std::string() : rest.substr(dot + 1);
      const service_config* svc = find_service(service);
      std::error_code ec;
      const bool adoptable = svc && svc->launcher == kind && valid_token(token) && valid_job_id(l.job_id) &&
                             fs::exists(dir.keys_dir() / token, ec);
      if (!adoptable) {
        if (is_final_state(l.state)) continue;
        job_record stray;
        stray.job = l.job_id;
        stray.launcher = kind;
        log::warn("cancelling a job with the deployment's prefix that it did not start", {{"job", l.job_id}, {"name", l.name}});
        if (cancel(stray, "not started by this deployment")) ++report.cancelled;
        continue;
      }
      job_record j;
      j.job = l.job_id;
      j.service = service;
      j.token = token;
      j.launcher = kind;
      j.queue_state = l.state;
      j.time_left_s = l.time_left.what == slurm_duration::kind::finite ? l.time_left.value.count() : -1;
      j.time_limit_s = l.time_limit.what == slurm_duration::kind::finite ? l.time_limit.value.count() : -1;
      j.observed_ms = now;
      j.submitted_ms = now;
      j.phase = is_final_state(l.state) ? job_phase::stopping : l.state == "RUNNING" ? job_phase::starting : job_phase::pending;
      if (j.phase == job_phase::starting) j.running_since_ms = now;
      log::info("job adopted", {{"job", j.job}, {"service", j.service}});
      ++report.adopted;
      st.jobs.push_back(std::move(j));
    }
  }

  // Readiness probes for starting jobs, health probes for ready and draining ones, all at once.
  void probe(scheduler_state& st, std::int64_t now, tick_report& report) {
    std::vector<probe_task> tasks;
    std::vector<job_record*> owners;
    for (auto& j : st.jobs) {
      if (j.phase != job_phase::starting && j.phase != job_phase::ready && j.phase != job_phase::draining) continue;
      if (j.host.empty()) {
        if (auto ep = read_endpoint(dir, j.token)) std::tie(j.host, j.port) = *ep;
      }
      if (j.host.empty()) continue;
      const service_config* svc = find_service(j.service);
      if (!svc) continue;
      auto key = read_job_key(dir, j.token);
      if (!key) {
        log::warn("job key unreadable", {{"job", j.job}, {"error", key.err().message()}});
        continue;
      }
      const probe_settings& p = j.phase == job_phase::starting ? svc->readiness : svc->health;
      tasks.push_back({j.host, j.port, p.path, std::move(*key), p.timeout, false, {}});
      owners.push_back(&j);
    }
    run_probes(tasks);
    report.probes = static_cast<std::int64_t>(tasks.size());
    for (std::size_t i = 0; i < tasks.size(); ++i) {
      job_record& j = *owners[i];
      const service_config& svc = *find_service(j.service);
      if (tasks[i].ok) {
        if (j.phase == job_phase::starting) log::info("job ready", {{"job", j.job}, {"service", j.service}});
        if (j.phase == job_phase::starting) j.phase = job_phase::ready;
        j.failed_probes = 0;
        continue;
      }
      ++j.failed_probes;
      log::debug("probe failed", {{"job", j.job}, {"error", tasks[i].failure}});
      const auto& settings = j.phase == job_phase::starting ? svc.readiness : svc.health;
      if (j.phase != job_phase::starting && j.failed_probes >= settings.failures_before_unhealthy) {
        log::warn("job unhealthy", {{"job", j.job}, {"failed_probes", std::to_string(j.failed_probes)},
                                    {"error", tasks[i].failure}});
        if (cancel(j, "unhealthy")) ++report.cancelled;
      }
    }
    for (auto& j : st.jobs) {
      if (j.phase != job_phase::starting) continue;
      const service_config* svc = find_service(j.service);
      if (svc && now - j.running_since_ms > std::chrono::duration_cast<milliseconds>(svc->start_timeout).count()) {
        log::warn("job not ready within the start timeout", {{"job", j.job}});
        if (cancel(j, "start timeout")) ++report.cancelled;
      }
    }
  }

  // Demand, target, rotation, scaling and draining for one service whose listing is known.
  void scale(const service_config& svc, service_record& rec, const inflight_counts& counts, std::int64_t now,
             tick_report& report, scheduler_state& st) {
    const auto jobs_of = [&] {
      std::vector<job_record*> out;
      for (auto& j : st.jobs)
        if (j.service == svc.id) out.push_back(&j);
      return out;
    };
    const auto find_job = [&](const std::string& id) -> job_record* {
      for (auto& j : st.jobs)
        if (j.job == id) return &j;
      return nullptr;
    };

    // Rotation: a replacement for each ready job near the end of the time it was granted;
    // the old job drains once its replacement is ready.
    for (job_record* j : jobs_of()) {
      if (j->phase != job_phase::ready || !j->replaced_by.empty()) continue;
      const auto left = j->time_left_at(now);
      if (!left || *left >= svc.rotation_lead.count()) continue;
      auto next = submit(svc, now);
      if (!next) {
        log::warn("submitting a replacement failed", {{"job", j->job}, {"error", next.err().message()}});
        continue;
      }
      j->replaced_by = next->job;
      log::info("job rotation started", {{"job", j->job}, {"replacement", next->job}, {"time_left_s", std::to_string(*left)}});
      ++report.submitted;
      ++report.rotated;
      st.jobs.push_back(std::move(*next));
    }
    for (job_record* j : jobs_of()) {
      if (j->replaced_by.empty()) continue;
      const job_record* next = find_job(j->replaced_by);
      if (!next || next->phase == job_phase::stopping) {
        j->replaced_by.clear();
      } else if (next->phase == job_phase::ready && j->phase == job_phase::ready) {
        j->phase = job_phase::draining;
        j->draining_since_ms = now;
        log::info("job draining: its replacement is ready", {{"job", j->job}, {"replacement", next->job}});
      }
    }

    // Scaling to the target.
    std::vector<job_record*> counted;
    for (job_record* j : jobs_of())
      if ((j->phase == job_phase::pending || j->phase == job_phase::starting || j->phase == job_phase::ready) &&
          j->replaced_by.empty())
        counted.push_back(j);
    const auto have = static_cast<std::int64_t>(counted.size());
    for (std::int64_t i = have; i < rec.target; ++i) {
      auto next = submit(svc, now);
      if (!next) {
        log::warn("submitting a job failed", {{"service", svc.id}, {"error", next.err().message()}});
        break;
      }
      ++report.submitted;
      st.jobs.push_back(std::move(*next));
    }
    if (have > rec.target) {
      // Jobs that serve nothing yet go first, the newest first; then ready ones with the least time left.
      const auto rank = [](const job_record* j) { return j->phase == job_phase::pending ? 0 : j->phase == job_phase::starting ? 1 : 2; };
      std::sort(counted.begin(), counted.end(), [&](const job_record* a, const job_record* b) {
        if (rank(a) != rank(b)) return rank(a) < rank(b);
        if (rank(a) < 2) return a->submitted_ms > b->submitted_ms;
        return a->time_left_at(now).value_or(INT64_MAX) < b->time_left_at(now).value_or(INT64_MAX);
      });
      for (std::int64_t i = 0; i < have - rec.target; ++i) {
        job_record* j = counted[static_cast<std::size_t>(i)];
        if (j->phase == job_phase::ready) {
          j->phase = job_phase::draining;
          j->draining_since_ms = now;
          log::info("job draining: fewer instances needed", {{"job", j->job}, {"service", svc.id}});
        } else if (cancel(*j, "fewer instances needed")) {
          ++report.cancelled;
        }
      }
    }

    // Draining jobs stop once nothing is in flight on them.
    for (job_record* j : jobs_of()) {
      if (j->phase != job_phase::draining || now - j->draining_since_ms < drain_grace_ms) continue;
      const auto busy = counts.by_job.find(j->job);
      if (busy != counts.by_job.end() && busy->second > 0) continue;
      if (cancel(*j, "drained")) ++report.cancelled;
    }
  }

  // Demand from the in-flight markers and start flags, smoothed; the target within [min, max].
  void update_target(const service_config& svc, service_record& rec, const inflight_counts& counts, std::int64_t now) {
    const auto found = counts.by_service.find(svc.id);
    const std::int64_t in_flight = found == counts.by_service.end() ? 0 : found->second;
    auto started = take_start_request(dir, svc.id);
    if (!started) log::warn("reading a start request failed", {{"error", started.err().message()}});
    const bool start_requested = started && *started;
    rec.in_flight = in_flight;
    rec.demand = config.demand_smoothing * static_cast<double>(in_flight) + (1.0 - config.demand_smoothing) * rec.demand;
    if (rec.demand < 1e-3) rec.demand = 0;
    if (in_flight > 0 || start_requested) rec.last_active_ms = now;
    // Up at once with the current demand, down as the smoothed demand decays.
    const double load = std::max(static_cast<double>(in_flight), rec.demand);
    std::int64_t want = static_cast<std::int64_t>(std::ceil(load / static_cast<double>(svc.requests_per_instance) - 1e-9));
    const auto idle_ms = std::chrono::duration_cast<milliseconds>(svc.idle_before_zero).count();
    if (rec.last_active_ms > 0 && now - rec.last_active_ms < idle_ms) want = std::max<std::int64_t>(want, 1);
    rec.target = std::clamp(want, svc.min_instances, svc.max_instances);
  }

  registry make_registry(const scheduler_state& st) const {
    registry reg;
    for (const auto& svc : config.services)
      reg.services.push_back({svc.id, svc.models, svc.min_instances == 0});
    for (const auto& j : st.jobs) {
      if (!find_service(j.service)) continue;
      if (j.host.empty()) {
        if (j.phase == job_phase::pending || j.phase == job_phase::starting)
          for (auto& s : reg.services)
            if (s.id == j.service) ++s.pending;
        continue;
      }
      backend_state state;
      if (j.phase == job_phase::starting) state = backend_state::starting;
      else if (j.phase == job_phase::ready) state = backend_state::ready;
      else if (j.phase == job_phase::draining) state = backend_state::draining;
      else continue;
      reg.backends.push_back({j.job, j.service, j.host, j.port, state, j.token});
    }
    return reg;
  }

  chatai::status publish(scheduler_state& st) {
    CHATAI_RETURN_IF_ERROR(replace_file_atomically(dir.scheduler_state_file(), state_to_json(st)));
    registry reg = make_registry(st);
    return write_registry(dir, reg);
  }

  // Deletes keys and endpoint files that no recorded job owns: a submission that failed, or
  // one that a killed tick could not finish and that never reached the queue. Runs only after
  // complete listings, when every queued job has been adopted.
  void collect_orphans(const scheduler_state& st) {
    std::set<std::string> tokens;
    for (const auto& j : st.jobs) tokens.insert(j.token);
    for (const auto& folder : {dir.keys_dir(), dir.endpoints_dir()}) {
      std::error_code ec;
      for (const auto& entry : fs::directory_iterator(folder, ec)) {
        const std::string token = entry.path().stem().string();
        if (valid_token(token) && !tokens.count(token)) fs::remove(entry.path(), ec);
      }
    }
  }

  result<tick_report> tick() {
    const auto started = std::chrono::steady_clock::now();
    std::lock_guard guard(mutex);
    CHATAI_RETURN_IF_ERROR(ensure_layout());
    auto lock = lock_ticks(dir);
    if (!lock) return std::move(lock).err();
    auto loaded = load_state(dir);
    if (!loaded) return std::move(loaded).err();
    scheduler_state st = std::move(*loaded);
    tick_report report;
    const std::int64_t now = unix_ms_now();

    std::map<launcher_kind, bool> known;
    for (const auto& svc : config.services) known[svc.launcher] = true;
    for (auto& [kind, ok] : known) {
      auto listed = launcher_of(kind).list(config.job_prefix);
      if (!listed) {
        ok = false;
        report.unknown_listings.emplace_back(to_string(kind));
        log::warn("job listing unknown; keeping every job as it was", {{"launcher", std::string(to_string(kind))},
                                                                       {"error", listed.err().message()}});
        continue;
      }
      reconcile(kind, *listed, now, report, st);
    }

    probe(st, now, report);

    if (auto swept = sweep_idle_markers(dir); !swept)
      log::warn("sweeping idle in-flight markers failed", {{"error", swept.err().message()}});
    auto counts = count_inflight(dir);
    if (!counts) log::warn("counting requests in flight failed", {{"error", counts.err().message()}});
    std::vector<service_record> services;
    for (const auto& svc : config.services) {
      service_record rec;
      rec.id = svc.id;
      for (const auto& old : st.services)
        if (old.id == svc.id) rec = old;
      rec.listing_known = known[svc.launcher];
      if (counts) update_target(svc, rec, *counts, now);
      services.push_back(rec);
    }
    st.services = services;
    for (std::size_t i = 0; i < config.services.size(); ++i) {
      const auto& svc = config.services[i];
      if (!st.services[i].listing_known || !counts) continue;
      scale(svc, st.services[i], *counts, now, report, st);
    }
    if (counts) {
      for (auto& j : st.jobs) {
        const auto found = counts->by_job.find(j.job);
        j.in_flight = found == counts->by_job.end() ? 0 : found->second;
      }
    }
    // Jobs of services no longer configured are stopped when their launcher's listing is known.
    for (auto& j : st.jobs)
      if (!find_service(j.service) && known[j.launcher] && j.phase != job_phase::stopping)
        if (cancel(j, "service removed from the configuration")) ++report.cancelled;

    st.last_tick_ms = now;
    CHATAI_RETURN_IF_ERROR(publish(st));
    if (std::all_of(known.begin(), known.end(), [](const auto& k) { return k.second; })) collect_orphans(st);
    report.duration = std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - started);
    return report;
  }
};

scheduler::scheduler(deployment_config config, std::unique_ptr<launcher> slurm, std::unique_ptr<launcher> local)
    : impl_(std::make_unique<impl>(std::move(config), std::move(slurm), std::move(local))) {}
scheduler::~scheduler() = default;
scheduler::scheduler(scheduler&&) noexcept = default;
scheduler& scheduler::operator=(scheduler&&) noexcept = default;

const deployment_config& scheduler::config() const noexcept { return impl_->config; }

chatai::status scheduler::init() {
  std::lock_guard guard(impl_->mutex);
  CHATAI_RETURN_IF_ERROR(impl_->ensure_layout());
  auto lock = lock_ticks(impl_->dir);
  if (!lock) return std::move(lock).err();
  auto st = load_state(impl_->dir);
  if (!st) return std::move(st).err();
  return impl_->publish(*st);
}

result<tick_report> scheduler::tick() { return impl_->tick(); }

result<scheduler_status> scheduler::status() const {
  auto st = load_state(impl_->dir);
  if (!st) return std::move(st).err();
  const std::int64_t now = unix_ms_now();
  scheduler_status out;
  out.last_tick_ms = st->last_tick_ms;
  for (const auto& svc : impl_->config.services) {
    service_status s;
    s.id = svc.id;
    s.launcher = svc.launcher;
    for (const auto& rec : st->services) {
      if (rec.id != svc.id) continue;
      s.target = rec.target;
      s.demand = rec.demand;
      s.in_flight = rec.in_flight;
      s.listing_known = rec.listing_known;
    }
    for (const auto& j : st->jobs) {
      if (j.service != svc.id) continue;
      if (j.phase == job_phase::ready) ++s.ready;
      if ((j.phase == job_phase::pending || j.phase == job_phase::starting || j.phase == job_phase::ready) &&
          j.replaced_by.empty())
        ++s.instances;
    }
    out.services.push_back(std::move(s));
  }
  for (const auto& j : st->jobs) {
    job_status js;
    js.job = j.job;
    js.service = j.service;
    js.token = j.token;
    js.launcher = j.launcher;
    js.phase = j.phase;
    js.queue_state = j.queue_state;
    js.host = j.host;
    js.port = j.port;
    if (const auto left = j.time_left_at(now)) js.time_left = seconds(*left);
    if (j.time_limit_s >= 0) js.time_limit = seconds(j.time_limit_s);
    js.failed_probes = j.failed_probes;
    js.replaced_by = j.replaced_by;
    js.in_flight = j.in_flight;
    out.jobs.push_back(std::move(js));
  }
  return out;
}

std::string to_json(const scheduler_status& status) {
  std::string out = "{\"last_tick_ms\":" + std::to_string(status.last_tick_ms) + ",\"services\":[";
  for (std::size_t i = 0; i < status.services.size(); ++i) {
    const auto& s = status.services[i];
    if (i) out += ',';
    out += "{\"id\":";
    json::append_quoted(out, s.id);
    char demand[32];
    std::snprintf(demand, sizeof demand, "%.3f", s.demand);
    out += ",\"launcher\":\"" + std::string(to_string(s.launcher)) + "\",\"target\":" + std::to_string(s.target) +
           ",\"instances\":" + std::to_string(s.instances) + ",\"ready\":" + std::to_string(s.ready) +
           ",\"in_flight\":" + std::to_string(s.in_flight) + ",\"demand\":" + demand +
           ",\"listing_known\":" + (s.listing_known ? "true" : "false") + "}";
  }
  out += "],\"jobs\":[";
  for (std::size_t i = 0; i < status.jobs.size(); ++i) {
    const auto& j = status.jobs[i];
    if (i) out += ',';
    out += "{\"job\":";
    json::append_quoted(out, j.job);
    out += ",\"service\":";
    json::append_quoted(out, j.service);
    out += ",\"launcher\":\"" + std::string(to_string(j.launcher)) + "\",\"phase\":\"" + std::string(to_string(j.phase)) +
           "\",\"queue_state\":";
    json::append_quoted(out, j.queue_state);
    out += ",\"host\":";
    json::append_quoted(out, j.host);
    out += ",\"port\":" + std::to_string(j.port);
    out += ",\"time_left_s\":" + (j.time_left ? std::to_string(j.time_left->count()) : std::string("null"));
    out += ",\"time_limit_s\":" + (j.time_limit ? std::to_string(j.time_limit->count()) : std::string("null"));
    out += ",\"failed_probes\":" + std::to_string(j.failed_probes) + ",\"in_flight\":" + std::to_string(j.in_flight) +
           ",\"replaced_by\":";
    json::append_quoted(out, j.replaced_by);
    out += '}';
  }
  out += "]}";
  return out;
}

std::string to_json(const tick_report& report) {
  std::string out = "{\"submitted\":" + std::to_string(report.submitted) + ",\"cancelled\":" +
                    std::to_string(report.cancelled) + ",\"adopted\":" + std::to_string(report.adopted) +
                    ",\"rotated\":" + std::to_string(report.rotated) + ",\"probes\":" + std::to_string(report.probes) +
                    ",\"unknown_listings\":[";
  for (std::size_t i = 0; i < report.unknown_listings.size(); ++i) {
    if (i) out += ',';
    json::append_quoted(out, report.unknown_listings[i]);
  }
  out += "],\"duration_ms\":" + std::to_string(report.duration.count()) + "}";
  return out;
}

std::string to_table(const scheduler_status& status) {
  const auto row = [](std::string& out, const std::vector<std::string>& cells, const std::vector<std::size_t>& widths) {
    for (std::size_t i = 0; i < cells.size(); ++i) {
      out += cells[i];
      if (i + 1 < cells.size()) out += std::string(widths[i] > cells[i].size() ? widths[i] - cells[i].size() + 2 : 2, ' ');
    }
    out += '\n';
  };
  const auto table = [&](std::string& out, const std::vector<std::vector<std::string>>& rows) {
    std::vector<std::size_t> widths(rows.front().size(), 0);
    for (const auto& r : rows)
      for (std::size_t i = 0; i < r.size(); ++i) widths[i] = std::max(widths[i], r[i].size());
    for (const auto& r : rows) row(out, r, widths);
  };
  const auto duration = [](const std::optional<seconds>& s) { return s ? format_duration(*s) : std::string("-"); };
  std::vector<std::vector<std::string>> services = {
      {"SERVICE", "LAUNCHER", "TARGET", "INSTANCES", "READY", "IN_FLIGHT", "DEMAND", "LISTING"}};
  for (const auto& s : status.services) {
    char demand[32];
    std::snprintf(demand, sizeof demand, "%.2f", s.demand);
    services.push_back({s.id, std::string(to_string(s.launcher)), std::to_string(s.target), std::to_string(s.instances),
                        std::to_string(s.ready), std::to_string(s.in_flight), demand, s.listing_known ? "known" : "UNKNOWN"});
  }
  std::vector<std::vector<std::string>> jobs = {
      {"JOB", "SERVICE", "PHASE", "QUEUE", "HOST", "PORT", "TIME_LEFT", "LIMIT", "FAILED_PROBES", "REPLACED_BY"}};
  for (const auto& j : status.jobs)
    jobs.push_back({j.job, j.service, std::string(to_string(j.phase)), j.queue_state.empty() ? "-" : j.queue_state,
                    j.host.empty() ? "-" : j.host, j.port ? std::to_string(j.port) : "-", duration(j.time_left),
                    duration(j.time_limit), std::to_string(j.failed_probes), j.replaced_by.empty() ? "-" : j.replaced_by});
  std::string out;
  table(out, services);
  out += '\n';
  table(out, jobs);
  return out;
}

}  // namespace chatai::slurm
