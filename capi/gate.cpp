// The C ABI of the gate: request header validation and the gate's verbs.
#include <cstring>
#include <string_view>

#include "capi_internal.hpp"
#include "chatai.h"
#include "chatai/gate/gate.hpp"
#include "chatai/gate/request.hpp"

namespace {

chatai::result<chatai::gate::gate_config> config_at(const char* config_path) {
  if (!config_path) return chatai::gate::gate_config{};
  return chatai::gate::load_config(config_path);
}

}  // namespace

extern "C" {

chatai_status chatai_gate_validate(const char* config_path, const char* header, size_t header_len, int* http_status) {
  if (http_status) *http_status = 0;
  return chatai::capi::guard([&]() -> chatai_status {
    if (!header) return chatai::capi::fail(CHATAI_ERROR_INVALID_ARGUMENT, "chatai_gate_validate: header is NULL");
    auto config = config_at(config_path);
    if (!config) return chatai::capi::fail(config.err());
    auto head = chatai::gate::parse_head(std::string_view(header, header_len), *config);
    if (head) return CHATAI_OK;
    if (http_status) *http_status = chatai::gate::http_status_for(head.err().code());
    return chatai::capi::fail(head.err());
  });
}

chatai_status chatai_gate_run(const char* config_path, const char* verb, int in_fd, int out_fd) {
  return chatai::capi::guard([&]() -> chatai_status {
    if (!config_path) return chatai::capi::fail(CHATAI_ERROR_INVALID_ARGUMENT, "chatai_gate_run: config_path is NULL");
    auto v = chatai::proto::parse_command(verb);
    if (!v) return chatai::capi::fail(v.err());
    auto config = chatai::gate::load_config(config_path);
    if (!config) return chatai::capi::fail(config.err());
    if (chatai::gate::run(*config, *v, in_fd, out_fd) != chatai::gate::exit_ok)
      return chatai::capi::fail(CHATAI_ERROR_IO, "chatai_gate_run: the answer was cut short");
    return CHATAI_OK;
  });
}

}  // extern "C"
