// The gateway's HTTP service: authentication, limits, routing by model through the tunnel,
// the answer re-emitted from the gate's raw HTTP response, accounting, health and metrics.
#include "chatai/gateway/gateway.hpp"

#include <asio/ip/address.hpp>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "chatai/core/clock.hpp"
#include "chatai/core/crypto.hpp"
#include "chatai/core/http_server.hpp"
#include "chatai/core/json.hpp"
#include "chatai/core/log.hpp"
#include "chatai/core/metrics.hpp"
#include "chatai/gateway/models.hpp"
#include "chatai/gateway/stream_usage.hpp"
#include "chatai/gateway/web_assets.hpp"
#include "chatai/proto/wire.hpp"

namespace chatai::gateway {

namespace {

using steady = std::chrono::steady_clock;

constexpr std::size_t max_whole_body = 16 * 1024 * 1024;  // a non-streamed answer from the gate
constexpr std::size_t stream_window = 1024 * 1024;         // gate bytes not yet sent on to the client
constexpr std::size_t low_water = 64 * 1024;  // client bytes unsent below which the gate may send more

constexpr std::string_view content_security_policy =
    "default-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'";

// An OpenAI-style error answer; `param` may be empty (null).
std::string error_json(std::string_view message, std::string_view type, std::string_view code, std::string_view param) {
  std::string body = "{\"error\":{\"message\":";
  json::append_quoted(body, message);
  body += ",\"type\":";
  json::append_quoted(body, type);
  body += ",\"param\":";
  if (param.empty()) body += "null";
  else json::append_quoted(body, param);
  body += ",\"code\":";
  json::append_quoted(body, code);
  body += "}}";
  return body;
}

// True when a Content-Type value names `type`: case-insensitive, parameters ignored.
bool is_media_type(const std::string* value, std::string_view type) {
  if (value == nullptr) return false;
  std::string_view v = std::string_view(*value).substr(0, value->find(';'));
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
  return http::iequals(v, type);
}

// True when a whole answer is a JSON object, as every OpenAI answer and error is.
bool is_json_object(std::string_view body) {
  auto doc = json::parse(body);
  return doc && doc->IsObject();
}

bool same_address(const std::string& a, const std::string& b) {
  std::error_code ea, eb;
  auto x = asio::ip::make_address(a, ea);
  auto y = asio::ip::make_address(b, eb);
  if (ea || eb) return false;
  if (x.is_v6() && x.to_v6().is_v4_mapped()) x = asio::ip::make_address_v4(asio::ip::v4_mapped, x.to_v6());
  if (y.is_v6() && y.to_v6().is_v4_mapped()) y = asio::ip::make_address_v4(asio::ip::v4_mapped, y.to_v6());
  return x == y;
}

// Who is asking, once authenticated.
struct principal {
  std::string key_id;  // empty for a proxy-authenticated user
  std::string user;
  limits applied;
  std::string subject() const { return key_id.empty() ? "user:" + user : "key:" + key_id; }
};

// An answer the gateway gives itself.
struct refusal {
  int status;
  std::string message;
  std::string type;
  std::string code;
  std::string param;
  int retry_after_s = 0;
};

}  // namespace

struct gateway::impl {
  gateway_config config;
  std::shared_ptr<tunnel::transport> transport;
  std::unique_ptr<key_store> store;
  limiter limits;
  std::unique_ptr<http::server> server;
  std::atomic<std::uint16_t> bound_port{0};
  bool running = false;  // start() was called
  bool stopped = false;

  // Metrics.
  metrics::registry registry;
  metrics::family<metrics::counter>& requests_total =
      registry.add_counter("chatai_gateway_requests_total", "Requests answered, by route and status code.", {"route", "code"});
  metrics::family<metrics::histogram>& latency = registry.add_histogram(
      "chatai_gateway_request_duration_seconds", "Time from a request's arrival to the end of its answer.",
      metrics::default_buckets(), {"route"});
  metrics::family<metrics::counter>& tokens_total =
      registry.add_counter("chatai_gateway_tokens_total", "Tokens accounted, by kind (prompt, completion).", {"kind"});
  metrics::family<metrics::gauge>& in_flight_gauge =
      registry.add_gauge("chatai_gateway_streams_in_flight", "Requests forwarded to the cluster and not yet answered.");
  metrics::family<metrics::counter>& refusals_total =
      registry.add_counter("chatai_gateway_rate_limit_refusals_total", "Requests refused by a limit, by limit.", {"limit"});

  // The cluster's models, renewed by the refresher thread.
  mutable std::mutex status_mutex;
  std::vector<model_entry> models;
  bool models_known = false;
  steady::time_point status_at{};
  std::string status_error = "not fetched yet";

  // Background threads: the status refresher and the back-pressure pump.
  std::mutex thread_mutex;
  std::condition_variable thread_cv;
  bool threads_stop = false;
  bool first_refresh_done = false;
  std::thread refresher;
  std::thread pump;

  // Forwarded requests not yet ended; stop() waits for them.
  std::mutex calls_mutex;
  std::condition_variable calls_cv;
  std::int64_t calls_in_flight = 0;

  struct call;
  std::mutex stalled_mutex;
  std::vector<std::shared_ptr<call>> stalled;

  void refresh_status() {
    auto doc = transport->status(std::chrono::seconds(10));
    result<std::vector<model_entry>> parsed = doc ? models_from_status(*doc) : result<std::vector<model_entry>>(doc.err());
    std::lock_guard lock(status_mutex);
    if (parsed) {
      models = std::move(*parsed);
      models_known = true;
      status_at = steady::now();
      status_error.clear();
    } else {
      status_error = parsed.err().message();
      log::warn("gateway: the cluster's status could not be fetched", {{"error", status_error}});
    }
  }

  void refresh_loop() {
    std::unique_lock lock(thread_mutex);
    while (!threads_stop) {
      lock.unlock();
      refresh_status();
      lock.lock();
      first_refresh_done = true;
      thread_cv.notify_all();
      thread_cv.wait_for(lock, config.status_refresh, [&] { return threads_stop; });
    }
  }

  void pump_loop();

  void count(std::string_view route, int code, steady::time_point started) {
    requests_total.labels({std::string(route), std::to_string(code)}).inc();
    latency.labels({std::string(route)}).observe(std::chrono::duration<double>(steady::now() - started).count());
  }

  // Every API answer's fields. The gateway names the content type of what it sends itself, so
  // a backend's label (text/html, say) never reaches a browser, and nosniff keeps a browser from
  // guessing another.
  http::headers base_headers(const std::string& request_id) const {
    http::headers h;
    h.add("X-Request-Id", request_id);
    h.add("X-Content-Type-Options", "nosniff");
    return h;
  }

  void refuse(http::response& res, const refusal& r, const std::string& request_id, std::string_view route,
              steady::time_point started, std::string_view method, std::string_view path) {
    auto h = base_headers(request_id);
    if (r.retry_after_s > 0) h.add("Retry-After", std::to_string(r.retry_after_s));
    res.send(r.status, "application/json", error_json(r.message, r.type, r.code, r.param), h);
    count(route, r.status, started);
    log::info("gateway: request", {{"request_id", request_id}, {"method", method}, {"path", path},
                                   {"status", std::to_string(r.status)}, {"error", r.code}});
  }

  // Errors: permission_denied (no key, or one that does not verify), invalid_argument (a
  // trusted proxy sent the user header more than once); any other is the key store failing.
  result<principal> authenticate(const http::request& req) const {
    if (config.sso) {
      const bool trusted = std::any_of(config.sso->trusted_proxies.begin(), config.sso->trusted_proxies.end(),
                                       [&](const std::string& a) { return same_address(a, req.remote_address); });
      // Two copies mean the proxy passed on one the client sent, or two proxies disagree: which
      // one names the user is a guess, so neither is believed, and an API key does not help.
      const auto copies = std::count_if(req.headers.begin(), req.headers.end(),
                                        [&](const http::header& h) { return http::iequals(h.name, config.sso->header); });
      if (trusted && copies > 1)
        return error(errc::invalid_argument, "the header " + config.sso->header + " was sent " +
                                                 std::to_string(copies) + " times; a request names one user");
      const auto* name = req.headers.find(config.sso->header);
      if (trusted && name != nullptr && !name->empty()) return principal{"", *name, config.default_limits};
    }
    const auto* auth = req.headers.find("Authorization");
    if (auth == nullptr || auth->size() <= 7 || !http::iequals(std::string_view(*auth).substr(0, 7), "Bearer "))
      return error(errc::permission_denied, "missing API key: send it as \"Authorization: Bearer sk-chatai-...\"");
    auto info = store->verify(std::string_view(*auth).substr(7), unix_ms_now());
    if (!info) return std::move(info).err();
    principal p{info->id, info->user, config.default_limits};
    if (info->limits.requests_per_minute) p.applied.requests_per_minute = *info->limits.requests_per_minute;
    if (info->limits.concurrent_streams) p.applied.concurrent_streams = *info->limits.concurrent_streams;
    return p;
  }

  // key_store::verify names expiry and revocation in its message; authenticate's only
  // invalid_argument is the repeated sign-on header; anything else is the database failing.
  static refusal auth_refusal(const error& e) {
    if (e.code() == errc::invalid_argument) return {400, e.message(), "invalid_request_error", "duplicate_header", ""};
    if (e.code() != errc::permission_denied) {
      log::error("gateway: the key store failed", {{"error", e.message()}});
      return {500, "the key store failed", "server_error", "internal_error", ""};
    }
    std::string code = "invalid_api_key";
    if (e.message().find("expired") != std::string::npos) code = "api_key_expired";
    else if (e.message().find("revoked") != std::string::npos) code = "api_key_revoked";
    return {401, e.message(), "invalid_request_error", code, ""};
  }

  // The service for a model, or why there is none.
  result<std::string> service_for(const std::string& model) const {
    std::lock_guard lock(status_mutex);
    if (!models_known) return error(errc::unavailable, "the cluster's model list is not available: " + status_error);
    for (const auto& m : models)
      if (m.model == model) return m.service;
    return error(errc::not_found, "the model '" + model + "' does not exist");
  }

  void handle_proxy(http::request& req, http::response res, std::string_view route);
  void handle_models(http::request& req, http::response res);
  void handle_health(http::response res);
  void handle_page(http::request& req, http::response res);
  http::router routes();
};

// One request forwarded through the tunnel. The transport's callbacks drive it on its I/O thread.
struct gateway::impl::call : std::enable_shared_from_this<call> {
  impl* owner = nullptr;
  http::response res;
  std::string request_id;
  std::string route;
  std::string method;
  std::string path;
  principal who;
  std::string model;
  bool client_wants_usage = false;
  bool client_wants_stream = false;
  steady::time_point started;
  std::int64_t started_unix_ms = 0;

  http::response_parser parser;
  std::optional<usage_filter> filter;
  bool event_stream = false;
  bool complete = false;   // the gate's response was read whole
  bool failed = false;     // the gate's response was malformed or the client left
  bool unasked_stream = false;  // the cluster streamed an answer the client wanted whole
  std::string whole;       // a non-streamed body
  int sent_status = 0;

  std::mutex stream_mutex;
  std::shared_ptr<tunnel::stream> stream;
  std::size_t unconsumed = 0;  // guarded by stream_mutex

  explicit call(http::response r) : res(std::move(r)) {}

  void on_data(std::string_view bytes) {
    if (!failed && !complete) {
      const auto st = parser.feed(bytes, [this](std::string_view body) { return on_body(body); });
      if (parser.head_complete() && !filter) start_answer();
      if (st == http::parse_state::complete) complete = true;
      else if (st == http::parse_state::failed) failed = true;
    }
    std::lock_guard lock(stream_mutex);
    if (failed && stream) {
      stream->cancel();
      return;
    }
    unconsumed += bytes.size();
    if (stream && res.buffered_bytes() < low_water) {
      stream->consumed(unconsumed);
      unconsumed = 0;
      return;
    }
    std::lock_guard stalled_lock(owner->stalled_mutex);
    owner->stalled.push_back(shared_from_this());
  }

  // The head has arrived: the answer to the client starts (a stream) or is collected (whole).
  // Only a stream the client asked for goes on as one; anything else is a whole answer (an
  // error, when a stream was asked for), checked to be JSON before it is sent.
  void start_answer() {
    const auto& head = parser.head();
    const bool streamed = is_media_type(head.headers.find("Content-Type"), "text/event-stream");
    event_stream = streamed && client_wants_stream;
    filter.emplace(event_stream, client_wants_usage);
    sent_status = head.status;
    if (streamed && !client_wants_stream) {
      unasked_stream = true;
      failed = true;
    } else if (event_stream) {
      auto h = owner->base_headers(request_id);
      h.add("Cache-Control", "no-cache");
      if (!res.begin_stream(head.status, "text/event-stream", h)) failed = true;  // the client is gone
    }
  }

  bool on_body(std::string_view body) {
    if (!filter) start_answer();
    if (unasked_stream) return false;
    std::string out = filter->feed(body);
    if (event_stream) {
      if (!out.empty() && !res.write(out)) return false;
      return true;
    }
    if (whole.size() + out.size() > max_whole_body) return false;
    whole += out;
    return true;
  }

  void on_end(const status& outcome) {
    if (!complete && !failed && parser.head_complete()) complete = parser.finish_at_eof() == http::parse_state::complete;
    if (filter) {
      std::string rest = filter->finish();
      if (event_stream && !rest.empty()) res.write(rest);
      else whole += rest;
    }
    int status_code = sent_status;
    const bool answered = !unasked_stream && (complete || (parser.head_complete() && event_stream));
    if (answered && (event_stream || is_json_object(whole))) {
      if (event_stream) {
        if (complete) res.finish();
      } else {
        auto h = owner->base_headers(request_id);
        if (const auto* ra = parser.head().headers.find("Retry-After")) h.add("Retry-After", *ra);
        res.send(status_code, "application/json", whole, h);
      }
    } else {
      const refusal r =
          answered ? refusal{502, "the cluster's answer was not JSON", "server_error", "backend_failed", ""}
          : unasked_stream
              ? refusal{502, "the cluster streamed an answer that was asked for whole", "server_error", "backend_failed", ""}
          : failed && !res.cancelled().is_cancelled()
              ? refusal{502, "the cluster's answer was malformed or too large", "server_error", "backend_failed", ""}
              : failure_for(outcome);
      status_code = r.status;
      auto h = owner->base_headers(request_id);
      if (r.retry_after_s > 0) h.add("Retry-After", std::to_string(r.retry_after_s));
      res.send(r.status, "application/json", error_json(r.message, r.type, r.code, r.param), h);
    }
    finish_accounting(status_code, outcome);
  }

  refusal failure_for(const status& outcome) const {
    if (outcome) return {502, "the cluster's answer was cut short or malformed", "server_error", "backend_failed", ""};
    switch (outcome.err().code()) {
      case errc::cancelled: return {499, "the client went away", "invalid_request_error", "client_gone", ""};
      case errc::timeout: return {504, "the cluster did not answer in time", "server_error", "timeout", ""};
      case errc::resource_exhausted:
        return {503, "too many requests are waiting for the cluster", "server_error", "tunnel_busy", "", 1};
      case errc::unavailable:
        return {503, "the cluster cannot be reached", "server_error", "cluster_unavailable", "", 5};
      default: return {502, "the connection to the cluster failed", "server_error", "tunnel_failed", ""};
    }
  }

  void finish_accounting(int status_code, const status& outcome) {
    const auto prompt = filter ? filter->prompt_tokens().value_or(0) : 0;
    const auto completion = filter ? filter->completion_tokens().value_or(0) : 0;
    const auto duration_ms = std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - started).count();
    owner->store->record(usage_event{request_id, who.key_id, who.user, model, status_code, prompt, completion,
                                     started_unix_ms, duration_ms});
    owner->tokens_total.labels({"prompt"}).inc(static_cast<double>(prompt));
    owner->tokens_total.labels({"completion"}).inc(static_cast<double>(completion));
    owner->count(route, status_code, started);
    owner->in_flight_gauge.get().sub(1);
    owner->limits.release(who.subject());
    log::info("gateway: request",
              {{"request_id", request_id}, {"method", method}, {"path", path}, {"status", std::to_string(status_code)},
               {"model", model}, {"key", who.key_id}, {"user", who.user}, {"duration_ms", std::to_string(duration_ms)},
               {"prompt_tokens", std::to_string(prompt)}, {"completion_tokens", std::to_string(completion)},
               {"tunnel", outcome ? "ok" : outcome.err().message()}});
    {
      std::lock_guard lock(stream_mutex);
      stream.reset();
      unconsumed = 0;
    }
    std::lock_guard lock(owner->calls_mutex);
    if (--owner->calls_in_flight == 0) owner->calls_cv.notify_all();
  }
};

void gateway::impl::pump_loop() {
  std::unique_lock lock(thread_mutex);
  while (!threads_stop) {
    thread_cv.wait_for(lock, std::chrono::milliseconds(5), [&] { return threads_stop; });
    lock.unlock();
    std::vector<std::shared_ptr<call>> waiting;
    {
      std::lock_guard s(stalled_mutex);
      waiting.swap(stalled);
    }
    std::vector<std::shared_ptr<call>> still;
    for (auto& c : waiting) {
      std::lock_guard s(c->stream_mutex);
      if (c->unconsumed == 0) continue;
      if (c->stream && (c->res.buffered_bytes() < low_water || c->res.cancelled().is_cancelled())) {
        c->stream->consumed(c->unconsumed);
        c->unconsumed = 0;
      } else {
        still.push_back(c);
      }
    }
    {
      std::lock_guard s(stalled_mutex);
      stalled.insert(stalled.end(), still.begin(), still.end());
    }
    lock.lock();
  }
}

void gateway::impl::handle_proxy(http::request& req, http::response res, std::string_view route) {
  const auto started = steady::now();
  auto id = crypto::random_hex(12);
  const std::string request_id = id ? "req-" + *id : "req-unknown";
  auto p = authenticate(req);
  if (!p) return refuse(res, auth_refusal(p.err()), request_id, route, started, req.method, req.path);

  auto doc = json::parse(req.body);
  if (!doc)
    return refuse(res, {400, "the request body is not valid JSON: " + doc.err().message(), "invalid_request_error",
                        "invalid_json", ""},
                  request_id, route, started, req.method, req.path);
  if (!doc->IsObject())
    return refuse(res, {400, "the request body is not a JSON object", "invalid_request_error", "invalid_json", ""}, request_id,
                  route, started, req.method, req.path);
  const auto model_it = doc->FindMember("model");
  if (model_it == doc->MemberEnd() || !model_it->value.IsString() || model_it->value.GetStringLength() == 0)
    return refuse(res, {400, "field 'model' must be a non-empty string", "invalid_request_error", "invalid_value", "model"},
                  request_id, route, started, req.method, req.path);
  const std::string model(model_it->value.GetString(), model_it->value.GetStringLength());
  bool wants_usage = false;
  if (const auto so = doc->FindMember("stream_options"); so != doc->MemberEnd() && so->value.IsObject()) {
    const auto iu = so->value.FindMember("include_usage");
    wants_usage = iu != so->value.MemberEnd() && iu->value.IsBool() && iu->value.GetBool();
  }
  auto prepared = proto::prepare_body(req.body);
  if (!prepared)
    return refuse(res, {400, prepared.err().message(), "invalid_request_error", "invalid_value", "stream_options"}, request_id,
                  route, started, req.method, req.path);

  auto service = service_for(model);
  if (!service) {
    if (service.err().code() == errc::not_found)
      return refuse(res, {404, service.err().message(), "invalid_request_error", "model_not_found", "model"}, request_id,
                    route, started, req.method, req.path);
    return refuse(res, {503, service.err().message(), "server_error", "cluster_unavailable", "", 5}, request_id, route,
                  started, req.method, req.path);
  }

  const auto decision = limits.acquire(p->subject(), p->applied);
  if (!decision.allowed) {
    refusals_total.labels({decision.reason}).inc();
    const std::string what = std::string(decision.reason) == "concurrent_streams"
                                 ? "too many requests in flight for this key (limit " +
                                       std::to_string(p->applied.concurrent_streams) + ")"
                                 : "too many requests per minute for this key (limit " +
                                       std::to_string(p->applied.requests_per_minute) + ")";
    return refuse(res, {429, what, "rate_limit_error", "rate_limit_exceeded", "",
                        static_cast<int>(decision.retry_after.count())},
                  request_id, route, started, req.method, req.path);
  }

  auto c = std::make_shared<call>(res);
  c->owner = this;
  c->request_id = request_id;
  c->route = std::string(route);
  c->method = req.method;
  c->path = req.path;
  c->who = std::move(*p);
  c->model = model;
  c->client_wants_usage = wants_usage;
  c->client_wants_stream = prepared->stream;
  c->started = started;
  c->started_unix_ms = unix_ms_now();
  {
    std::lock_guard lock(calls_mutex);
    ++calls_in_flight;
  }
  in_flight_gauge.get().add(1);

  tunnel::gate_request g;
  g.id = request_id;
  g.user = proto::user_tag(c->who.user);
  g.service = *service;
  g.method = "POST";
  g.path = req.path;
  g.headers.emplace_back("content-type", "application/json");
  if (prepared->stream) g.headers.emplace_back("accept", "text/event-stream");
  g.affinity = proto::affinity_key(g.user, req.path, *doc);
  g.body = std::move(prepared->body);

  tunnel::request_options options;
  options.first_byte_timeout = config.first_byte_timeout;
  options.idle_timeout = config.idle_timeout;
  options.window = stream_window;
  options.cancel = res.cancelled();
  tunnel::stream_callbacks callbacks;
  callbacks.on_data = [c](std::string_view bytes) { c->on_data(bytes); };
  callbacks.on_end = [c](const status& outcome) { c->on_end(outcome); };
  auto stream = transport->request(g, std::move(callbacks), std::move(options));
  std::lock_guard lock(c->stream_mutex);
  c->stream = std::move(stream);
}

void gateway::impl::handle_models(http::request& req, http::response res) {
  const auto started = steady::now();
  auto id = crypto::random_hex(12);
  const std::string request_id = id ? "req-" + *id : "req-unknown";
  auto p = authenticate(req);
  if (!p) return refuse(res, auth_refusal(p.err()), request_id, "/v1/models", started, req.method, req.path);
  std::string body = "{\"object\":\"list\",\"data\":[";
  {
    std::lock_guard lock(status_mutex);
    if (!models_known) {
      const refusal r{503, "the cluster's model list is not available: " + status_error, "server_error",
                      "cluster_unavailable", "", 5};
      return refuse(res, r, request_id, "/v1/models", started, req.method, req.path);
    }
    for (std::size_t i = 0; i < models.size(); ++i) {
      if (i) body += ',';
      body += "{\"id\":";
      json::append_quoted(body, models[i].model);
      body += ",\"object\":\"model\",\"created\":0,\"owned_by\":\"chatai\",\"state\":\"";
      body += to_string(models[i].state);
      body += "\"}";
    }
  }
  body += "]}";
  res.send(200, "application/json", body, base_headers(request_id));
  count("/v1/models", 200, started);
}

void gateway::impl::handle_health(http::response res) {
  const auto h = transport->health();
  const auto now = steady::now();
  std::string body = "{\"status\":";
  bool fresh;
  {
    std::lock_guard lock(status_mutex);
    fresh = models_known && now - status_at < 3 * config.status_refresh + std::chrono::seconds(10);
    body += fresh ? "\"ok\"" : "\"degraded\"";
    body += ",\"status_age_s\":";
    body += models_known ? std::to_string(std::chrono::duration<double>(now - status_at).count()) : "null";
    body += ",\"status_error\":";
    if (status_error.empty()) body += "null";
    else json::append_quoted(body, status_error);
    body += ",\"models\":" + std::to_string(models.size());
  }
  body += ",\"tunnel\":{\"alive\":";
  body += h.alive ? "true" : "false";
  body += ",\"since_keep_alive_s\":";
  body += h.last_keep_alive == steady::time_point{}
              ? "null"
              : std::to_string(std::chrono::duration<double>(now - h.last_keep_alive).count());
  body += ",\"sessions_up\":" + std::to_string(h.sessions_up) +
          ",\"requests_running\":" + std::to_string(h.requests_running) +
          ",\"requests_queued\":" + std::to_string(h.requests_queued) + ",\"last_error\":";
  if (h.last_error.empty()) body += "null";
  else json::append_quoted(body, h.last_error);
  body += "}}";
  res.send(fresh ? 200 : 503, "application/json", body);
  count("/health", fresh ? 200 : 503, now);
}

void gateway::impl::handle_page(http::request& req, http::response res) {
  const auto started = steady::now();
  const web_asset* asset = find_web_asset(req.path);
  http::headers h;
  h.add("Content-Security-Policy", std::string(content_security_policy));
  h.add("X-Content-Type-Options", "nosniff");
  h.add("Referrer-Policy", "no-referrer");
  if (asset == nullptr) {
    res.send(404, "application/json", error_json("no page at " + req.path, "invalid_request_error", "not_found", ""), h);
    count("page", 404, started);
    return;
  }
  h.add("ETag", std::string(asset->etag));
  h.add("Cache-Control", "no-cache");
  if (const auto* match = req.headers.find("If-None-Match")) {
    std::string_view list = *match;
    bool hit = list == "*";
    while (!hit && !list.empty()) {
      const auto comma = list.find(',');
      std::string_view tag = list.substr(0, comma);
      while (!tag.empty() && tag.front() == ' ') tag.remove_prefix(1);
      while (!tag.empty() && tag.back() == ' ') tag.remove_suffix(1);
      if (tag.substr(0, 2) == "W/") tag.remove_prefix(2);
      hit = tag == asset->etag;
      list = comma == std::string_view::npos ? std::string_view() : list.substr(comma + 1);
    }
    if (hit) {
      res.send(304, "", "", h);
      count("page", 304, started);
      return;
    }
  }
  res.send(200, asset->content_type, asset->body, h);
  count("page", 200, started);
}

http::router gateway::impl::routes() {
  http::router r;
  r.add("POST", "/v1/chat/completions",
        [this](http::request& req, http::response res) { handle_proxy(req, std::move(res), "/v1/chat/completions"); });
  r.add("POST", "/v1/completions",
        [this](http::request& req, http::response res) { handle_proxy(req, std::move(res), "/v1/completions"); });
  r.add("POST", "/v1/embeddings",
        [this](http::request& req, http::response res) { handle_proxy(req, std::move(res), "/v1/embeddings"); });
  r.add("GET", "/v1/models", [this](http::request& req, http::response res) { handle_models(req, std::move(res)); });
  r.add("GET", "/health", [this](http::request&, http::response res) { handle_health(std::move(res)); });
  r.add("GET", "/metrics", [this](http::request&, http::response res) {
    const auto started = steady::now();
    res.send(200, metrics::exposition_content_type, registry.expose());
    count("/metrics", 200, started);
  });
  if (config.chat_page)
    r.add_prefix("GET", "/", [this](http::request& req, http::response res) { handle_page(req, std::move(res)); });
  return r;
}

gateway::gateway(std::unique_ptr<impl> p) : impl_(std::move(p)) {}

result<std::unique_ptr<gateway>> gateway::create(gateway_config config, std::shared_ptr<tunnel::transport> transport) {
  if (!transport) return error(errc::invalid_argument, "transport: must not be null");
  auto store = key_store::open(config.database);
  if (!store) return std::move(store).err().with_context("database");
  auto p = std::make_unique<impl>();
  p->config = std::move(config);
  p->transport = std::move(transport);
  p->store = std::move(*store);
  p->in_flight_gauge.get().set(0);
  return std::unique_ptr<gateway>(new gateway(std::move(p)));
}

result<std::unique_ptr<gateway>> gateway::create(gateway_config config) {
  std::shared_ptr<tunnel::transport> transport;
  if (config.transport == transport_kind::ssh) {
    auto t = tunnel::ssh_transport::create(config.ssh);
    if (!t) return std::move(t).err().with_context("transport");
    transport = std::move(*t);
  } else {
    auto t = tunnel::local_transport::create(config.local);
    if (!t) return std::move(t).err().with_context("transport");
    transport = std::move(*t);
  }
  return create(std::move(config), std::move(transport));
}

gateway::~gateway() { stop(); }

status gateway::start() {
  auto& p = *impl_;
  if (p.running) return error(errc::invalid_argument, "the gateway was started before");
  p.running = true;
  p.refresher = std::thread([&p] { p.refresh_loop(); });
  p.pump = std::thread([&p] { p.pump_loop(); });
  {
    std::unique_lock lock(p.thread_mutex);
    p.thread_cv.wait(lock, [&] { return p.first_refresh_done; });
  }
  http::server_options o;
  o.host = p.config.host;
  o.port = p.config.port;
  o.io_threads = p.config.io_threads;
  o.limits.max_body_bytes = static_cast<std::size_t>(p.config.max_body_bytes);
  auto server = http::server::start(o, p.routes());
  if (!server) {
    stop();
    return std::move(server).err();
  }
  p.server = std::move(*server);
  p.bound_port = p.server->port();
  log::info("gateway: listening", {{"url", url()}});
  return ok_status();
}

void gateway::refresh_models() { impl_->refresh_status(); }

std::uint16_t gateway::port() const noexcept { return impl_->bound_port.load(); }

std::string gateway::url() const {
  const std::string& host = impl_->config.host;
  const bool v6 = host.find(':') != std::string::npos;
  return "http://" + (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port());
}

void gateway::stop() {
  auto& p = *impl_;
  if (p.stopped || !p.running) return;
  p.stopped = true;
  if (p.server) p.server->stop(p.config.shutdown_grace);
  {
    // The server's stop cancelled what was left; the transport ends those calls promptly.
    std::unique_lock lock(p.calls_mutex);
    p.calls_cv.wait_for(lock, std::chrono::seconds(10), [&] { return p.calls_in_flight == 0; });
  }
  {
    std::lock_guard lock(p.thread_mutex);
    p.threads_stop = true;
  }
  p.thread_cv.notify_all();
  if (p.refresher.joinable()) p.refresher.join();
  if (p.pump.joinable()) p.pump.join();
  {
    std::lock_guard lock(p.stalled_mutex);
    p.stalled.clear();
  }
  p.store->flush();
  p.server.reset();
  p.transport.reset();
  p.bound_port = 0;
}

key_store& gateway::keys() noexcept { return *impl_->store; }

}  // namespace chatai::gateway
