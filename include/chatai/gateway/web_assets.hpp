// The chat page's files, compiled into the library.
#pragma once

#include <string_view>

namespace chatai::gateway {

struct web_asset {
  std::string_view path, content_type, body, etag;
};

// The asset for a request path ("/" is "/index.html"), or nullptr.
const web_asset* find_web_asset(std::string_view path) noexcept;

}  // namespace chatai::gateway
