// The C ABI's model server: chatai::serve::model_server started in-process.
#include <memory>

#include "capi_internal.hpp"
#include "chatai.h"
#include "chatai/serve/server.hpp"

struct chatai_server {
  std::unique_ptr<chatai::serve::model_server> server;
};

using chatai::capi::fail;
using chatai::capi::guard;

extern "C" {

chatai_status chatai_server_create(chatai_server** out, const chatai_server_options* opts) {
  return guard([&]() -> chatai_status {
    if (out == nullptr || opts == nullptr) return fail(CHATAI_ERROR_INVALID_ARGUMENT, "out and opts must not be NULL");
    *out = nullptr;
    if (opts->version != CHATAI_SERVER_OPTIONS_VERSION)
      return fail(CHATAI_ERROR_INVALID_ARGUMENT, "unknown chatai_server_options version; use CHATAI_SERVER_OPTIONS_INIT");
    if (opts->model_path == nullptr) return fail(CHATAI_ERROR_INVALID_ARGUMENT, "model_path must not be NULL");
    if (opts->port < 0 || opts->port > 65535) return fail(CHATAI_ERROR_INVALID_ARGUMENT, "port must be within 0..65535");
    chatai::serve::server_options o;
    o.model_path = opts->model_path;
    if (opts->served_model_name) o.served_model_name = opts->served_model_name;
    if (opts->host) o.host = opts->host;
    o.port = static_cast<std::uint16_t>(opts->port);
    if (opts->device) o.device = opts->device;
    o.threads = opts->threads;
    o.context = opts->context;
    if (opts->parallel > 0) o.parallel = opts->parallel;
    if (opts->max_queue >= 0) o.max_queue = opts->max_queue;
    if (opts->api_key_file) o.api_key_file = opts->api_key_file;
    auto started = chatai::serve::model_server::start(std::move(o));
    if (!started) return fail(started.err());
    auto ready = (*started)->wait_ready();
    if (!ready) return fail(ready.err());
    *out = new chatai_server{std::move(*started)};
    return CHATAI_OK;
  });
}

int chatai_server_port(const chatai_server* server) { return server == nullptr ? 0 : server->server->port(); }

chatai_status chatai_server_drain(chatai_server* server) {
  return guard([&]() -> chatai_status {
    if (server == nullptr) return fail(CHATAI_ERROR_INVALID_ARGUMENT, "server must not be NULL");
    server->server->drain();
    return CHATAI_OK;
  });
}

chatai_status chatai_server_stop(chatai_server* server) {
  return guard([&]() -> chatai_status {
    if (server == nullptr) return fail(CHATAI_ERROR_INVALID_ARGUMENT, "server must not be NULL");
    server->server->stop();
    return CHATAI_OK;
  });
}

void chatai_server_free(chatai_server* server) { delete server; }

}  // extern "C"
