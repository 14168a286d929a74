// The C ABI's gateway: chatai::gateway::gateway created from a config file or JSON text.
#include <memory>

#include "capi_internal.hpp"
#include "chatai.h"
#include "chatai/gateway/gateway.hpp"

struct chatai_gateway {
  std::unique_ptr<chatai::gateway::gateway> gateway;
};

using chatai::capi::fail;
using chatai::capi::guard;

extern "C" {

chatai_status chatai_gateway_create(chatai_gateway** out, const chatai_gateway_options* opts) {
  return guard([&]() -> chatai_status {
    if (out == nullptr || opts == nullptr) return fail(CHATAI_ERROR_INVALID_ARGUMENT, "out and opts must not be NULL");
    *out = nullptr;
    if (opts->version != CHATAI_GATEWAY_OPTIONS_VERSION)
      return fail(CHATAI_ERROR_INVALID_ARGUMENT, "unknown chatai_gateway_options version; use CHATAI_GATEWAY_OPTIONS_INIT");
    if ((opts->config_path == nullptr) == (opts->config_json == nullptr))
      return fail(CHATAI_ERROR_INVALID_ARGUMENT, "give exactly one of config_path and config_json");
    auto config = opts->config_path ? chatai::gateway::load_config(opts->config_path)
                                    : chatai::gateway::parse_config(opts->config_json, "config_json");
    if (!config) return fail(config.err());
    auto gw = chatai::gateway::gateway::create(std::move(*config));
    if (!gw) return fail(gw.err());
    *out = new chatai_gateway{std::move(*gw)};
    return CHATAI_OK;
  });
}

chatai_status chatai_gateway_start(chatai_gateway* gateway) {
  return guard([&]() -> chatai::status {
    if (gateway == nullptr) return chatai::error(chatai::errc::invalid_argument, "gateway must not be NULL");
    return gateway->gateway->start();
  });
}

int chatai_gateway_port(const chatai_gateway* gateway) { return gateway == nullptr ? 0 : gateway->gateway->port(); }

chatai_status chatai_gateway_stop(chatai_gateway* gateway) {
  return guard([&]() -> chatai_status {
    if (gateway == nullptr) return fail(CHATAI_ERROR_INVALID_ARGUMENT, "gateway must not be NULL");
    gateway->gateway->stop();
    return CHATAI_OK;
  });
}

void chatai_gateway_free(chatai_gateway* gateway) { delete gateway; }

}  // extern "C"
