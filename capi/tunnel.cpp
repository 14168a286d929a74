// The C ABI of the tunnel: the SSH and local transports, streamed requests through callbacks,
// the gate's status and keep-alive, health.
#include <algorithm>
#include <chrono>
#include <cstring>
#include <memory>
#include <string>

#include "capi_internal.hpp"
#include "chatai.h"
#include "chatai/tunnel/local_transport.hpp"
#include "chatai/tunnel/ssh_transport.hpp"

struct chatai_tunnel {
  std::unique_ptr<chatai::tunnel::transport> transport;
  chatai::tunnel::ssh_transport* ssh = nullptr;  // the same object when it is an SSH tunnel
};

struct chatai_tunnel_stream {
  std::shared_ptr<chatai::tunnel::stream> stream;
};

using chatai::capi::fail;
using chatai::capi::guard;

namespace {

using std::chrono::milliseconds;

// `value` when positive, `fallback` when 0; false for a negative value.
bool duration_or(int64_t value, milliseconds fallback, milliseconds& out) {
  if (value < 0) return false;
  out = value == 0 ? fallback : milliseconds(value);
  return true;
}

// The keep-alive interval: 0 keeps the default, a negative value turns keep-alives off.
milliseconds keep_alive_interval(int64_t value, milliseconds fallback) {
  if (value < 0) return milliseconds(0);
  return value == 0 ? fallback : milliseconds(value);
}

chatai_status negative(const char* field) {
  return fail(CHATAI_ERROR_INVALID_ARGUMENT, (std::string(field) + " must not be negative").c_str());
}

}  // namespace

extern "C" {

chatai_status chatai_tunnel_create_ssh(chatai_tunnel** out, const chatai_tunnel_ssh_options* opts) {
  return guard([&]() -> chatai_status {
    if (out == nullptr || opts == nullptr) return fail(CHATAI_ERROR_INVALID_ARGUMENT, "out and opts must not be NULL");
    *out = nullptr;
    if (opts->version != CHATAI_TUNNEL_SSH_OPTIONS_VERSION)
      return fail(CHATAI_ERROR_INVALID_ARGUMENT,
                  "unknown chatai_tunnel_ssh_options version; use CHATAI_TUNNEL_SSH_OPTIONS_INIT");
    for (auto [value, field] : {std::pair{opts->host, "host"}, std::pair{opts->user, "user"},
                                std::pair{opts->key_file, "key_file"}, std::pair{opts->known_hosts, "known_hosts"}})
      if (value == nullptr) return fail(CHATAI_ERROR_INVALID_ARGUMENT, (std::string(field) + " must not be NULL").c_str());
    if (opts->port < 1 || opts->port > 65535) return fail(CHATAI_ERROR_INVALID_ARGUMENT, "port must be within 1..65535");
    for (auto [value, field] : {std::pair{opts->sessions, "sessions"},
                                std::pair{opts->channels_per_session, "channels_per_session"},
                                std::pair{opts->max_queued, "max_queued"}})
      if (value < 0) return negative(field);
    chatai::tunnel::ssh_options o;
    o.host = opts->host;
    o.port = opts->port;
    o.user = opts->user;
    o.key_file = opts->key_file;
    if (opts->passphrase) o.passphrase = opts->passphrase;
    o.known_hosts = opts->known_hosts;
    o.trust_on_first_use = opts->trust_on_first_use != 0;
    if (opts->sessions > 0) o.sessions = opts->sessions;
    if (opts->channels_per_session > 0) o.channels_per_session = opts->channels_per_session;
    if (opts->max_queued > 0) o.max_queued = opts->max_queued;
    if (!duration_or(opts->connect_timeout_ms, o.connect_timeout, o.connect_timeout)) return negative("connect_timeout_ms");
    if (!duration_or(opts->reconnect_initial_ms, o.reconnect_initial, o.reconnect_initial))
      return negative("reconnect_initial_ms");
    if (!duration_or(opts->reconnect_max_ms, o.reconnect_max, o.reconnect_max)) return negative("reconnect_max_ms");
    if (!duration_or(opts->keep_alive_timeout_ms, o.keep_alive_timeout, o.keep_alive_timeout))
      return negative("keep_alive_timeout_ms");
    o.keep_alive_interval = keep_alive_interval(opts->keep_alive_interval_ms, o.keep_alive_interval);
    auto created = chatai::tunnel::ssh_transport::create(std::move(o));
    if (!created) return fail(created.err());
    auto* ssh = created->get();
    *out = new chatai_tunnel{std::move(*created), ssh};
    return CHATAI_OK;
  });
}

chatai_status chatai_tunnel_create_local(chatai_tunnel** out, const chatai_tunnel_local_options* opts) {
  return guard([&]() -> chatai_status {
    if (out == nullptr || opts == nullptr) return fail(CHATAI_ERROR_INVALID_ARGUMENT, "out and opts must not be NULL");
    *out = nullptr;
    if (opts->version != CHATAI_TUNNEL_LOCAL_OPTIONS_VERSION)
      return fail(CHATAI_ERROR_INVALID_ARGUMENT,
                  "unknown chatai_tunnel_local_options version; use CHATAI_TUNNEL_LOCAL_OPTIONS_INIT");
    if (opts->gate_program == nullptr) return fail(CHATAI_ERROR_INVALID_ARGUMENT, "gate_program must not be NULL");
    if (opts->gate_config == nullptr) return fail(CHATAI_ERROR_INVALID_ARGUMENT, "gate_config must not be NULL");
    if (opts->max_running < 0) return negative("max_running");
    if (opts->max_queued < 0) return negative("max_queued");
    chatai::tunnel::local_options o;
    o.gate_program = opts->gate_program;
    o.gate_config = opts->gate_config;
    if (opts->max_running > 0) o.max_running = opts->max_running;
    if (opts->max_queued > 0) o.max_queued = opts->max_queued;
    if (!duration_or(opts->keep_alive_timeout_ms, o.keep_alive_timeout, o.keep_alive_timeout))
      return negative("keep_alive_timeout_ms");
    o.keep_alive_interval = keep_alive_interval(opts->keep_alive_interval_ms, o.keep_alive_interval);
    auto created = chatai::tunnel::local_transport::create(std::move(o));
    if (!created) return fail(created.err());
    *out = new chatai_tunnel{std::move(*created), nullptr};
    return CHATAI_OK;
  });
}

void chatai_tunnel_free(chatai_tunnel* tunnel) { delete tunnel; }

chatai_status chatai_tunnel_wait_connected(chatai_tunnel* tunnel, int64_t timeout_ms) {
  return guard([&]() -> chatai_status {
    if (tunnel == nullptr) return fail(CHATAI_ERROR_INVALID_ARGUMENT, "tunnel must not be NULL");
    if (timeout_ms < 0) return negative("timeout_ms");
    if (tunnel->ssh == nullptr) return CHATAI_OK;
    auto st = tunnel->ssh->wait_connected(milliseconds(timeout_ms));
    return st ? CHATAI_OK : fail(st.err());
  });
}

chatai_status chatai_tunnel_request(chatai_tunnel* tunnel, const chatai_tunnel_request_options* opts,
                                    chatai_tunnel_data_callback on_data, chatai_tunnel_end_callback on_end, void* user,
                                    chatai_tunnel_stream** out) {
  if (out) *out = nullptr;
  return guard([&]() -> chatai_status {
    if (tunnel == nullptr || opts == nullptr || on_end == nullptr)
      return fail(CHATAI_ERROR_INVALID_ARGUMENT, "tunnel, opts and on_end must not be NULL");
    if (opts->version != CHATAI_TUNNEL_REQUEST_OPTIONS_VERSION)
      return fail(CHATAI_ERROR_INVALID_ARGUMENT,
                  "unknown chatai_tunnel_request_options version; use CHATAI_TUNNEL_REQUEST_OPTIONS_INIT");
    if (opts->id == nullptr) return fail(CHATAI_ERROR_INVALID_ARGUMENT, "id must not be NULL");
    if (opts->service == nullptr) return fail(CHATAI_ERROR_INVALID_ARGUMENT, "service must not be NULL");
    if (opts->body == nullptr && opts->body_len > 0)
      return fail(CHATAI_ERROR_INVALID_ARGUMENT, "body must not be NULL when body_len is not 0");
    if (opts->n_headers > 0 && (opts->header_names == nullptr || opts->header_values == nullptr))
      return fail(CHATAI_ERROR_INVALID_ARGUMENT, "header_names and header_values must not be NULL when n_headers is not 0");
    chatai::tunnel::gate_request r;
    r.id = opts->id;
    if (opts->user) r.user = opts->user;
    r.service = opts->service;
    if (opts->method) r.method = opts->method;
    if (opts->path) r.path = opts->path;
    for (size_t i = 0; i < opts->n_headers; ++i) {
      if (opts->header_names[i] == nullptr || opts->header_values[i] == nullptr)
        return fail(CHATAI_ERROR_INVALID_ARGUMENT,
                    ("header_names[" + std::to_string(i) + "] and its value must not be NULL").c_str());
      r.headers.emplace_back(opts->header_names[i], opts->header_values[i]);
    }
    if (opts->body_len > 0) r.body.assign(opts->body, opts->body_len);
    chatai::tunnel::request_options o;
    if (!duration_or(opts->first_byte_timeout_ms, o.first_byte_timeout, o.first_byte_timeout))
      return negative("first_byte_timeout_ms");
    if (!duration_or(opts->idle_timeout_ms, o.idle_timeout, o.idle_timeout)) return negative("idle_timeout_ms");
    o.window = opts->window;
    // The data callback cancels through the token: it may run before start() has returned.
    chatai::cancellation_source stop;
    o.cancel = stop.token();
    chatai::tunnel::stream_callbacks callbacks;
    callbacks.on_data = [on_data, user, stop](std::string_view bytes) mutable {
      if (on_data && on_data(bytes.data(), bytes.size(), user) != 0) stop.cancel();
    };
    callbacks.on_end = [on_end, user](const chatai::status& outcome) {
      if (outcome)
        on_end(CHATAI_OK, "", user);
      else
        on_end(chatai::capi::to_status(outcome.err().code()), outcome.err().message().c_str(), user);
    };
    // Allocated first, so that a failed allocation leaves no request running.
    auto handle = out ? std::make_unique<chatai_tunnel_stream>() : nullptr;
    auto s = tunnel->transport->request(r, std::move(callbacks), std::move(o));
    if (out) {
      handle->stream = std::move(s);
      *out = handle.release();
    }
    return CHATAI_OK;
  });
}

chatai_status chatai_tunnel_stream_consumed(chatai_tunnel_stream* stream, size_t bytes) {
  return guard([&]() -> chatai_status {
    if (stream == nullptr) return fail(CHATAI_ERROR_INVALID_ARGUMENT, "stream must not be NULL");
    stream->stream->consumed(bytes);
    return CHATAI_OK;
  });
}

chatai_status chatai_tunnel_stream_cancel(chatai_tunnel_stream* stream) {
  return guard([&]() -> chatai_status {
    if (stream == nullptr) return fail(CHATAI_ERROR_INVALID_ARGUMENT, "stream must not be NULL");
    stream->stream->cancel();
    return CHATAI_OK;
  });
}

void chatai_tunnel_stream_free(chatai_tunnel_stream* stream) { delete stream; }

chatai_status chatai_tunnel_status(chatai_tunnel* tunnel, int64_t timeout_ms, char* buffer, size_t buffer_size,
                                   size_t* length) {
  if (length) *length = 0;
  return guard([&]() -> chatai_status {
    if (tunnel == nullptr) return fail(CHATAI_ERROR_INVALID_ARGUMENT, "tunnel must not be NULL");
    if (buffer == nullptr && buffer_size > 0)
      return fail(CHATAI_ERROR_INVALID_ARGUMENT, "buffer must not be NULL when buffer_size is not 0");
    milliseconds timeout;
    if (!duration_or(timeout_ms, std::chrono::seconds(10), timeout)) return negative("timeout_ms");
    auto doc = tunnel->transport->status(timeout);
    if (!doc) return fail(doc.err());
    return chatai::capi::copy_out(*doc, buffer, buffer_size, length);
  });
}

chatai_status chatai_tunnel_keep_alive(chatai_tunnel* tunnel, int64_t timeout_ms) {
  return guard([&]() -> chatai::status {
    if (tunnel == nullptr) return chatai::error(chatai::errc::invalid_argument, "tunnel must not be NULL");
    milliseconds timeout;
    if (!duration_or(timeout_ms, std::chrono::seconds(10), timeout))
      return chatai::error(chatai::errc::invalid_argument, "timeout_ms must not be negative");
    return tunnel->transport->keep_alive(timeout);
  });
}

chatai_status chatai_tunnel_get_health(const chatai_tunnel* tunnel, chatai_tunnel_health* out) {
  return guard([&]() -> chatai_status {
    if (tunnel == nullptr || out == nullptr) return fail(CHATAI_ERROR_INVALID_ARGUMENT, "tunnel and out must not be NULL");
    if (out->version != CHATAI_TUNNEL_HEALTH_VERSION)
      return fail(CHATAI_ERROR_INVALID_ARGUMENT, "unknown chatai_tunnel_health version; use CHATAI_TUNNEL_HEALTH_INIT");
    const auto h = tunnel->transport->health();
    out->alive = h.alive ? 1 : 0;
    out->since_keep_alive_ms =
        h.last_keep_alive == std::chrono::steady_clock::time_point{}
            ? -1
            : std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - h.last_keep_alive).count();
    out->sessions_up = h.sessions_up;
    out->requests_running = h.requests_running;
    out->requests_queued = h.requests_queued;
    const size_t n = std::min(h.last_error.size(), sizeof out->last_error - 1);
    std::memcpy(out->last_error, h.last_error.data(), n);
    out->last_error[n] = '\0';
    return CHATAI_OK;
  });
}

}  // extern "C"
