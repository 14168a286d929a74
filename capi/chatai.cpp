// The C ABI's version and error functions.
#include <algorithm>
#include <cstring>
#include <string>
#include <string_view>

#include "capi_internal.hpp"
#include "chatai.h"

namespace chatai::capi {

namespace {
thread_local std::string t_last_error;
}

chatai_status to_status(errc code) noexcept {
  switch (code) {
    case errc::ok: return CHATAI_OK;
    case errc::invalid_argument: return CHATAI_ERROR_INVALID_ARGUMENT;
    case errc::not_found: return CHATAI_ERROR_NOT_FOUND;
    case errc::io_error: return CHATAI_ERROR_IO;
    case errc::parse_error: return CHATAI_ERROR_PARSE;
    case errc::out_of_range: return CHATAI_ERROR_OUT_OF_RANGE;
    case errc::unsupported: return CHATAI_ERROR_UNSUPPORTED;
    case errc::timeout: return CHATAI_ERROR_TIMEOUT;
    case errc::cancelled: return CHATAI_ERROR_CANCELLED;
    case errc::unavailable: return CHATAI_ERROR_UNAVAILABLE;
    case errc::resource_exhausted: return CHATAI_ERROR_RESOURCE_EXHAUSTED;
    case errc::permission_denied: return CHATAI_ERROR_PERMISSION_DENIED;
    case errc::internal: return CHATAI_ERROR_INTERNAL;
  }
  return CHATAI_ERROR_INTERNAL;
}

chatai_status fail(const error& err) noexcept {
  try {
    t_last_error = err.message();
  } catch (...) {
    t_last_error.clear();
  }
  const chatai_status code = to_status(err.code());
  return code == CHATAI_OK ? CHATAI_ERROR_INTERNAL : code;
}

chatai_status fail(chatai_status code, const char* message) noexcept {
  try {
    t_last_error = message;
  } catch (...) {
    t_last_error.clear();
  }
  return code;
}

chatai_status copy_out(std::string_view text, char* buffer, size_t buffer_size, size_t* length) noexcept {
  if (length != nullptr) *length = text.size();
  if (buffer_size == 0) return CHATAI_OK;
  const std::size_t copied = std::min(text.size(), buffer_size - 1);
  std::memcpy(buffer, text.data(), copied);
  buffer[copied] = '\0';
  if (copied == text.size()) return CHATAI_OK;
  try {
    const std::string message = "the text needs " + std::to_string(text.size() + 1) + " bytes, the buffer has " +
                                std::to_string(buffer_size);
    return fail(CHATAI_ERROR_OUT_OF_RANGE, message.c_str());
  } catch (...) {
    return fail(CHATAI_ERROR_OUT_OF_RANGE, "the buffer is too small");
  }
}

}  // namespace chatai::capi

extern "C" {

const char* chatai_version(void) { return CHATAI_VERSION_STRING; }

unsigned chatai_version_number(void) { return CHATAI_VERSION_NUMBER; }

const char* chatai_status_string(chatai_status status) {
  switch (status) {
    case CHATAI_OK: return "ok";
    case CHATAI_ERROR_INVALID_ARGUMENT: return "invalid_argument";
    case CHATAI_ERROR_NOT_FOUND: return "not_found";
    case CHATAI_ERROR_IO: return "io_error";
    case CHATAI_ERROR_PARSE: return "parse_error";
    case CHATAI_ERROR_OUT_OF_RANGE: return "out_of_range";
    case CHATAI_ERROR_UNSUPPORTED: return "unsupported";
    case CHATAI_ERROR_TIMEOUT: return "timeout";
    case CHATAI_ERROR_CANCELLED: return "cancelled";
    case CHATAI_ERROR_UNAVAILABLE: return "unavailable";
    case CHATAI_ERROR_RESOURCE_EXHAUSTED: return "resource_exhausted";
    case CHATAI_ERROR_PERMISSION_DENIED: return "permission_denied";
    case CHATAI_ERROR_INTERNAL: return "internal";
  }
  return "unknown";
}

const char* chatai_last_error(void) { return chatai::capi::t_last_error.c_str(); }

void chatai_clear_error(void) { chatai::capi::t_last_error.clear(); }

}  // extern "C"
