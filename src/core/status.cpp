// Names of error codes and error context.
#include "chatai/core/status.hpp"

namespace chatai {

std::string_view to_string(errc code) noexcept {
  switch (code) {
    case errc::ok: return "ok";
    case errc::invalid_argument: return "invalid_argument";
    case errc::not_found: return "not_found";
    case errc::io_error: return "io_error";
    case errc::parse_error: return "parse_error";
    case errc::out_of_range: return "out_of_range";
    case errc::unsupported: return "unsupported";
    case errc::timeout: return "timeout";
    case errc::cancelled: return "cancelled";
    case errc::unavailable: return "unavailable";
    case errc::resource_exhausted: return "resource_exhausted";
    case errc::permission_denied: return "permission_denied";
    case errc::internal: return "internal";
  }
  return "unknown";
}

error error::with_context(std::string_view context) const {
  std::string message(context);
  message += ": ";
  message += message_;
  return error(code_, std::move(message));
}

}  // namespace chatai
