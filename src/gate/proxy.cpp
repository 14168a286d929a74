// The `request` verb: read and check the request, hold it to its service's cap on requests in
// flight, route it, have the backend prove it holds the job key, stream the backend's
// response, watch the client, keep the breaker, the in-flight marker and the usage record.
#include <fcntl.h>
#include <sys/stat.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include "chatai/core/http_client.hpp"
#include "chatai/core/json.hpp"
#include "chatai/core/key_proof.hpp"
#include "chatai/core/log.hpp"
#include "chatai/core/unique_fd.hpp"
#include "chatai/gate/breaker.hpp"
#include "chatai/gate/gate.hpp"
#include "chatai/gate/request.hpp"
#include "chatai/gate/usage.hpp"
#include "internal.hpp"
#include "worker_pool.hpp"

namespace chatai::gate::detail {

namespace {

using steady = std::chrono::steady_clock;

// Response fields that describe the backend connection, not the response: the gate frames
// the body itself.
constexpr std::string_view dropped_response_headers[] = {"connection", "keep-alive", "transfer-encoding",
                                                         "content-length", "te", "trailer", "upgrade",
                                                         "proxy-connection", "proxy-authenticate", "set-cookie"};

// One request between the thread that watches the client and the one that talks to backends.
// Shared, so that a backend call the client walked away from can finish on its own.
struct exchange {
  gate_config config;
  slurm::registry reg;
  const slurm::service_entry* service = nullptr;
  gate_request request;
  prepared_body body;
  std::optional<slurm::inflight_marker> marker;
  // The count the cap was checked against: the first backend is picked by it, so that a
  // request counts the markers once (each costs an open and a lock test).
  std::optional<slurm::inflight_counts> counted;
  steady::time_point started;

  unique_fd out;   // a duplicate of the client's descriptor, closed when the exchange ends
  unique_fd done;  // an eventfd the backend thread signals when it has finished
  std::atomic<bool> finished{false};  // set (release) before `done` is signalled
  std::atomic<bool> client_gone{false};

  // Written by the backend thread; read by the watcher once `done` fired.
  bool written = false;
  int status = 0;
  std::string outcome;
  std::string backend;
  std::int64_t first_byte_ms = -1;
  std::optional<std::int64_t> prompt_tokens, completion_tokens;
  int exit_code = exit_ok;
};

std::string head_bytes(const http::response_head& head, bool chunked) {
  std::string out = "HTTP/1.1 " + std::to_string(head.status) + " " + std::string(http::reason_phrase(head.status)) + "\r\n";
  for (const auto& field : head.headers) {
    const bool dropped = std::any_of(std::begin(dropped_response_headers), std::end(dropped_response_headers),
                                     [&](std::string_view name) { return http::iequals(name, field.name); });
    if (dropped) continue;
    out += field.name + ": " + field.value + "\r\n";
  }
  if (chunked) out += "Transfer-Encoding: chunked\r\n";
  out += "Connection: close\r\n\r\n";
  return out;
}

std::string chunk(std::string_view bytes) {
  char size[20];
  const int n = std::snprintf(size, sizeof size, "%zx\r\n", bytes.size());
  std::string out(size, static_cast<std::size_t>(n));
  out.append(bytes);
  out += "\r\n";
  return out;
}

bool write_out(exchange& ex, std::string_view bytes) {
  if (write_all(ex.out.get(), bytes)) return true;
  ex.client_gone = true;
  return false;
}

std::int64_t ms_since(steady::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - t).count();
}

// Asks the backend at the other end of `conn` to prove that it holds `key` (see
// chatai/core/key_proof.hpp). Nothing secret is sent: the challenge is fresh and the request
// carries no key and no body. The answer must come within the connect timeout: the backend's
// I/O threads give it without waiting for the model.
status check_key_proof(http::client_connection& conn, const slurm::backend_entry& b, const std::string& key,
                       const gate_config& config) {
  auto challenge = key_proof::new_challenge();
  if (!challenge) return std::move(challenge).err();
  http::client_request req;
  req.method = "GET";
  req.target = std::string(key_proof::path);
  req.headers.add("Host", b.host + ":" + std::to_string(b.port));
  req.headers.add(std::string(key_proof::challenge_header), *challenge);
  http::client_options options;
  options.first_byte_timeout = config.connect_timeout;
  options.idle_timeout = config.connect_timeout;
  std::string body;
  bool too_long = false;
  http::response_handlers handlers;
  handlers.on_body = [&](std::string_view bytes) {
    body.append(bytes);
    too_long = body.size() > key_proof::answer_hex_digits;
    return !too_long;
  };
  auto head = conn.fetch_streaming(req, handlers, options);
  if (too_long) return error(errc::permission_denied, "the proof answer is longer than a proof");
  if (!head) return std::move(head).err();
  if (head->status != 200)
    return error(errc::permission_denied, "the proof request was answered with status " + std::to_string(head->status));
  if (!key_proof::verify(key, *challenge, body)) return error(errc::permission_denied, "the proof is wrong");
  if (!conn.reusable()) return error(errc::unavailable, "the connection was closed after the proof");
  return {};
}

// Connections to backends that proved that they hold their job key, kept between the requests
// of one gate process (a session gate carries many): a proof holds for its connection, since no
// other process can take the port over while the connection is open. An idle one is dropped
// after 20 s, before chatai serve's keep-alive timeout (60 s) would close it.
class proven_connections {
 public:
  std::optional<http::client_connection> take(const slurm::backend_entry& b, const std::string& key) {
    std::lock_guard lock(mutex_);
    const auto now = steady::now();
    std::optional<http::client_connection> found;
    // Expired ones go by their age; only a candidate is asked whether its peer closed it.
    for (auto it = idle_.begin(); it != idle_.end();) {
      if (now - it->since > max_idle) {
        it = idle_.erase(it);
        continue;
      }
      const bool candidate = !found && it->job == b.job && it->host == b.host && it->port == b.port && it->key == key;
      if (!candidate) {
        ++it;
        continue;
      }
      if (it->conn.still_open()) found.emplace(std::move(it->conn));
      it = idle_.erase(it);
    }
    return found;
  }

  void give(const slurm::backend_entry& b, const std::string& key, http::client_connection conn) {
    std::lock_guard lock(mutex_);
    if (idle_.size() >= max_kept) idle_.erase(idle_.begin());
    idle_.push_back(entry{b.job, b.host, b.port, key, std::move(conn), steady::now()});
  }

 private:
  static constexpr auto max_idle = std::chrono::seconds(20);
  static constexpr std::size_t max_kept = 256;
  struct entry {
    std::string job;
    std::string host;
    std::int64_t port;
    std::string key;
    http::client_connection conn;
    steady::time_point since;
  };
  std::mutex mutex_;
  std::vector<entry> idle_;
};

proven_connections& kept_connections() {
  static auto* kept = new proven_connections;  // never freed: pool threads may use it until _exit
  return *kept;
}

// A job's key as last read by this process, reused while its file is unchanged (same inode,
// size, mode and modification time, checked with one lstat): the scheduler writes each key
// once, so a session gate reads it once instead of once per request.
result<std::string> read_job_key_cached(const slurm::state_dir& dir, const std::string& key_file) {
  struct cached {
    dev_t device;
    ino_t inode;
    timespec modified;
    off_t size;
    mode_t mode;
    std::string key;
  };
  static std::mutex mutex;
  static auto* keys = new std::map<std::string, cached>;  // never freed: pool threads may read it until _exit
  struct stat info{};
  const std::string path = (dir.keys_dir() / key_file).string();
  // Only names read_job_key accepted are ever cached; any other name misses and is refused there.
  const bool known = ::lstat(path.c_str(), &info) == 0 && S_ISREG(info.st_mode);
  if (known) {
    std::lock_guard lock(mutex);
    const auto it = keys->find(key_file);
    if (it != keys->end() && it->second.inode == info.st_ino && it->second.device == info.st_dev &&
        it->second.size == info.st_size && it->second.mode == info.st_mode &&
        it->second.modified.tv_sec == info.st_mtim.tv_sec && it->second.modified.tv_nsec == info.st_mtim.tv_nsec)
      return it->second.key;
  }
  auto key = slurm::read_job_key(dir, key_file);
  if (key && known) {
    std::lock_guard lock(mutex);
    if (keys->size() >= 1024) keys->clear();
    (*keys)[key_file] = cached{info.st_dev, info.st_ino, info.st_mtim, info.st_size, info.st_mode, *key};
  }
  return key;
}

// Sends the request to one backend. Returns true when the exchange is over, false to try
// another backend (nothing has been written to the client then).
bool try_backend(exchange& ex, const slurm::backend_entry& b, bool last_attempt) {
  const slurm::state_dir dir(ex.config.state_dir);
  breaker br(dir, b.job, ex.config.breaker);
  const auto fail_backend = [&](std::string_view what, const std::string& detail) {
    log::warn(what, {{"job", b.job}, {"error", detail}});
    if (auto st = br.record_failure(unix_ms_now()); !st) log::warn("breaker update failed", {{"error", st.err().message()}});
  };
  auto key = read_job_key_cached(dir, b.key_file);
  if (!key) {
    fail_backend("backend key unreadable", key.err().message());
    return false;
  }

  http::client_options options;
  options.connect_timeout = ex.config.connect_timeout;
  options.first_byte_timeout = ex.config.first_byte_timeout;
  options.idle_timeout = ex.config.idle_timeout;

  http::client_request req;
  req.method = ex.request.head.method;
  req.target = ex.request.head.path;
  req.headers.add("Host", b.host + ":" + std::to_string(b.port));
  req.headers.add("Authorization", "Bearer " + *key);
  for (const auto& [name, value] : ex.request.head.headers) req.headers.add(name, value);
  if (req.method == "POST" && !req.headers.find("content-type")) req.headers.add("Content-Type", "application/json");
  req.body = ex.body.body;

  // A kept connection first; when it turns out closed before any answer, a fresh one (that
  // failure is the connection's age, not the backend's).
  auto conn = kept_connections().take(b, *key);
  for (bool reused = conn.has_value();; reused = false) {
    if (!reused) {
      const auto address = http::resolve_address(b.host);
      if (!address) {
        fail_backend("backend host does not resolve", b.host);
        return false;
      }
      // The proof and the requests share one connection: a port cannot change hands between them.
      auto opened = http::client_connection::open(*address, static_cast<std::uint16_t>(b.port), options);
      if (!opened) {
        fail_backend("backend failed", opened.err().message());
        return false;
      }
      if (auto proven = check_key_proof(*opened, b, *key, ex.config); !proven) {
        fail_backend("backend did not prove that it holds the job key", proven.err().message());
        return false;
      }
      conn.emplace(std::move(*opened));
    }

    bool retry_5xx = false;
    bool chunked = false;
    bool event_stream = false;
    usage_scanner scanner(false);
    http::response_handlers handlers;
    handlers.on_head = [&](const http::response_head& head) {
      if (head.status >= 500 && !last_attempt) {
        retry_5xx = true;
        return false;
      }
      if (ex.client_gone) return false;
      ex.status = head.status;
      ex.backend = b.job;
      ex.first_byte_ms = ms_since(ex.started);
      const std::string* type = head.headers.find("content-type");
      event_stream = type && type->rfind("text/event-stream", 0) == 0;
      scanner = usage_scanner(event_stream);
      chunked = head.status != 204 && head.status != 304;
      ex.written = true;
      return write_out(ex, head_bytes(head, chunked));
    };
    handlers.on_body = [&](std::string_view bytes) {
      if (ex.client_gone) return false;
      scanner.feed(bytes);
      return write_out(ex, chunk(bytes));
    };

    auto head = conn->fetch_streaming(req, handlers, options);
    if (!head && reused && !ex.written && !retry_5xx && !ex.client_gone && head.err().code() != errc::timeout) continue;
    scanner.finish();
    ex.prompt_tokens = scanner.prompt_tokens();
    ex.completion_tokens = scanner.completion_tokens();
    if (head) {
      if (head->status >= 500) fail_backend("backend answered with an error", std::to_string(head->status));
      else if (auto st = br.record_success(); !st) log::warn("breaker update failed", {{"error", st.err().message()}});
      ex.outcome = "ok";
      if (chunked && !write_out(ex, "0\r\n\r\n")) ex.exit_code = exit_incomplete;
      if (conn->reusable() && !ex.client_gone) kept_connections().give(b, *key, std::move(*conn));
      return true;
    }
    if (retry_5xx) {
      fail_backend("backend answered with an error, trying another", "5xx");
      return false;
    }
    if (ex.client_gone) {
      ex.outcome = "client_gone";
      ex.exit_code = exit_incomplete;
      return true;
    }
    fail_backend("backend failed", head.err().message());
    if (!ex.written) return false;
    // The response has begun, so it cannot go elsewhere: end it visibly. The missing last chunk
    // tells an HTTP client; an event stream also gets an error event.
    if (event_stream) {
      write_out(ex, chunk("data: {\"error\":{\"message\":\"the backend failed during the response\","
                          "\"type\":\"server_error\",\"param\":null,\"code\":\"backend_failed\"}}\n\n"));
    }
    ex.outcome = "backend_failed";
    ex.exit_code = exit_incomplete;
    return true;
  }
}

void proxy(exchange& ex) {
  std::vector<std::string> tried;
  const slurm::state_dir dir(ex.config.state_dir);
  for (std::int64_t attempt = 0; attempt < ex.config.max_attempts && !ex.client_gone; ++attempt) {
    result<slurm::inflight_counts> counts = slurm::inflight_counts{};
    if (attempt == 0 && ex.counted) counts = std::move(*ex.counted);
    else counts = slurm::count_inflight(dir);
    if (!counts) log::warn("counting requests in flight failed", {{"error", counts.err().message()}});
    auto picked = pick_backend(ex.config, ex.reg, ex.service->id, counts ? *counts : slurm::inflight_counts{}, tried,
                               ex.request.head.affinity);
    if (!picked) {
      log::warn("reading the breakers failed", {{"error", picked.err().message()}});
      break;
    }
    if (!*picked) break;
    const slurm::backend_entry& b = **picked;
    tried.push_back(b.job);
    if (ex.marker) {
      if (auto st = ex.marker->set_backend(b.job); !st) log::warn("in-flight marker", {{"error", st.err().message()}});
    }
    if (try_backend(ex, b, attempt + 1 == ex.config.max_attempts)) return;
  }
  if (ex.client_gone) {
    ex.outcome = "client_gone";
    ex.exit_code = exit_incomplete;
    return;
  }
  const int retry_after = static_cast<int>(ex.config.retry_after.count());
  if (!tried.empty()) {
    ex.status = 502;
    ex.outcome = "backend_failed";
    if (!write_out(ex, error_response(502, "no backend could answer the request", 0))) ex.exit_code = exit_incomplete;
    return;
  }
  const bool any_ready = std::any_of(ex.reg.backends.begin(), ex.reg.backends.end(), [&](const auto& b) {
    return b.service == ex.service->id && b.state == slurm::backend_state::ready;
  });
  std::string message = "no backend of this service is ready";
  if (!any_ready && ex.service->can_scale_from_zero) {
    if (auto st = slurm::request_start(dir, ex.service->id); st) message = "the service is starting; retry later";
    else log::warn("asking for a start failed", {{"error", st.err().message()}});
  }
  ex.status = 503;
  ex.outcome = "no_backend";
  if (!write_out(ex, error_response(503, message, retry_after))) ex.exit_code = exit_incomplete;
}

// Waits until the backend thread is done or the client goes away: end-of-file or bytes on
// `in_fd`, or an error on `out_fd`. Returns true when the backend thread finished.
bool wait_for_backend_or_client(exchange& ex, int in_fd, int out_fd) {
  pollfd fds[3] = {{ex.done.get(), POLLIN, 0}, {in_fd, POLLIN, 0}, {out_fd, 0, 0}};
  for (;;) {
    const int n = ::poll(fds, 3, -1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;
    if (fds[0].revents) return true;
    if (fds[1].revents || fds[2].revents) return false;
  }
}

usage_record record_of(const exchange& ex) {
  usage_record rec;
  rec.id = ex.request.head.id;
  rec.user = ex.request.head.user;
  rec.service = ex.service->id;
  rec.backend = ex.backend;
  rec.status = ex.status;
  rec.outcome = ex.outcome;
  rec.prompt_tokens = ex.prompt_tokens;
  rec.completion_tokens = ex.completion_tokens;
  rec.stream = ex.body.stream;
  rec.first_byte_ms = ex.first_byte_ms;
  rec.duration_ms = ms_since(ex.started);
  return rec;
}

int answer(int out_fd, int http_status, std::string_view message, int retry_after_s = 0, std::string_view code = {}) {
  return write_all(out_fd, error_response(http_status, message, retry_after_s, code)) ? exit_ok : exit_incomplete;
}

// Why a request must be refused under its service's cap on requests in flight.
struct cap_refusal {
  std::string message;
  std::string code;  // of the error body
};

// The refusal of a request beyond its service's cap, or nothing when it may go on. The
// request's own marker exists before the markers are counted, so of requests racing for the
// last places some may be refused needlessly, but never more than the cap admitted. A request
// whose marker could not be made, or whose service's markers cannot be counted, is refused
// too: it could not be held to the cap.
std::optional<cap_refusal> check_in_flight_cap(exchange& ex) {
  if (!ex.marker) return cap_refusal{"the gate cannot count this request; retry later", "in_flight_unknown"};
  auto counts = slurm::count_inflight(slurm::state_dir(ex.config.state_dir));
  if (!counts) {
    log::warn("counting requests in flight failed", {{"error", counts.err().message()}});
    return cap_refusal{"the gate cannot count the requests in flight; retry later", "in_flight_unknown"};
  }
  const auto found = counts->by_service.find(ex.service->id);
  const std::int64_t in_flight = found == counts->by_service.end() ? 0 : found->second;
  ex.counted = std::move(*counts);
  if (in_flight <= ex.config.max_in_flight_per_service) return std::nullopt;
  log::warn("request refused: too many in flight",
            {{"service", ex.service->id}, {"in_flight", std::to_string(in_flight)},
             {"cap", std::to_string(ex.config.max_in_flight_per_service)}});
  return cap_refusal{"too many requests of this service are in flight; retry later", "too_many_requests_in_flight"};
}

// The registry as last read by this process, reused while its file is the same one: the
// scheduler replaces it by rename, so every version is a new file (inode), and a session gate
// reads and parses it once per version instead of once per request.
result<slurm::registry> read_registry_cached(const slurm::state_dir& dir) {
  struct cached {
    dev_t device = 0;
    ino_t inode = 0;
    timespec modified{};
    off_t size = -1;
    slurm::registry reg;
  };
  static std::mutex mutex;
  static cached* last = new cached;  // never freed: pool threads may read it until _exit
  struct stat info{};
  const bool known = ::stat(dir.registry_file().c_str(), &info) == 0;
  if (known) {
    std::lock_guard lock(mutex);
    if (last->size == info.st_size && last->inode == info.st_ino && last->device == info.st_dev &&
        last->modified.tv_sec == info.st_mtim.tv_sec && last->modified.tv_nsec == info.st_mtim.tv_nsec)
      return last->reg;
  }
  auto reg = slurm::read_registry(dir);
  if (reg && known) {
    // Stored under what was seen before the read: a newer file read meanwhile is simply read
    // again next time, as its inode differs.
    std::lock_guard lock(mutex);
    *last = cached{info.st_dev, info.st_ino, info.st_mtim, info.st_size, *reg};
  }
  return reg;
}

}  // namespace

int handle_request(const gate_config& config, int in_fd, int out_fd,
                   const std::shared_ptr<slurm::marker_pool>& markers) {
  const auto started = steady::now();
  const std::int64_t started_at_ms = unix_ms_now();
  auto request = read_request(in_fd, config);
  if (!request) return answer(out_fd, http_status_for(request.err().code()), request.err().message());

  const slurm::state_dir dir(config.state_dir);
  auto reg = read_registry_cached(dir);
  if (!reg) {
    log::warn("the registry is not readable", {{"error", reg.err().message()}});
    return answer(out_fd, 503, "the service registry is not available", static_cast<int>(config.retry_after.count()));
  }
  const slurm::service_entry* service = reg->find_service(request->head.service);
  if (!service) return answer(out_fd, 404, "unknown service");
  if (!request->model.empty() && !service->models.empty() &&
      std::find(service->models.begin(), service->models.end(), request->model) == service->models.end())
    return answer(out_fd, 404, "the model is not served by this service");
  auto body = prepare_body(request->body);
  if (!body) return answer(out_fd, 400, body.err().message());

  auto ex = std::make_shared<exchange>();
  ex->config = config;
  ex->reg = std::move(*reg);
  ex->service = ex->reg.find_service(request->head.service);
  ex->request = std::move(*request);
  ex->body = std::move(*body);
  ex->started = started;
  ex->out.reset(::fcntl(out_fd, F_DUPFD_CLOEXEC, 0));
  ex->done.reset(::eventfd(0, EFD_CLOEXEC));
  if (!ex->out || !ex->done) return answer(out_fd, 502, "the gate could not set up the request");
  if (auto marker = slurm::inflight_marker::create(dir, ex->service->id, markers)) ex->marker.emplace(std::move(*marker));
  else log::warn("in-flight marker", {{"error", marker.err().message()}});
  if (const auto refusal = check_in_flight_cap(*ex)) {
    // A refused request is no demand: its marker goes before the answer does.
    ex->marker.reset();
    const int retry_after = static_cast<int>(config.retry_after.count());
    const int code = answer(out_fd, 503, refusal->message, retry_after, refusal->code);
    ex->status = 503;
    ex->outcome = "busy";
    usage_record rec = record_of(*ex);
    rec.started_at_ms = started_at_ms;
    if (auto st = append_usage(dir, rec); !st) log::warn("usage record", {{"error", st.err().message()}});
    return code;
  }

  // The backend call runs on the process's worker pool; `done` tells when it is over.
  static const auto pool = new std::shared_ptr<worker_pool>(std::make_shared<worker_pool>());  // never freed
  try {
    worker_pool::run(*pool, [ex] {
      try {
        proxy(*ex);
      } catch (const std::exception& e) {
        log::error("gate request failed", {{"error", e.what()}});
        if (!ex->written && write_out(*ex, error_response(502, "the gate failed", 0))) ex->status = 502;
        ex->outcome = "backend_failed";
        ex->exit_code = exit_incomplete;
      }
      ex->finished.store(true, std::memory_order_release);
      const std::uint64_t one = 1;
      (void)!::write(ex->done.get(), &one, sizeof one);
    });
  } catch (const std::system_error&) {
    ex->marker.reset();
    return answer(out_fd, 503, "the gate is out of threads; retry later", static_cast<int>(config.retry_after.count()));
  }

  usage_record rec;
  int code;
  if (wait_for_backend_or_client(*ex, in_fd, out_fd) && ex->finished.load(std::memory_order_acquire)) {
    rec = record_of(*ex);
    code = ex->exit_code;
    // The worker's copy of ex may outlive this call: the marker is released here, before the
    // caller reports the request over (a session gate's end frame), not whenever that copy goes.
    ex->marker.reset();
  } else {
    ex->client_gone = true;
    // The backend call stops at its next byte or deadline; the request is over for us now.
    rec.id = ex->request.head.id;
    rec.user = ex->request.head.user;
    rec.service = ex->service->id;
    rec.outcome = "client_gone";
    rec.stream = ex->body.stream;
    rec.duration_ms = ms_since(started);
    code = exit_incomplete;
  }
  rec.started_at_ms = started_at_ms;
  if (auto st = append_usage(dir, rec); !st) log::warn("usage record", {{"error", st.err().message()}});
  return code;
}

}  // namespace chatai::gate::detail
