// Looks up the chat page's files, which cmake/embed_files.cmake compiles into the library.
#include "chatai/gateway/web_assets.hpp"

#include <span>

namespace chatai::gateway {

namespace detail {
// Defined in the generated web_assets_data.cpp.
std::span<const web_asset> embedded_web_assets() noexcept;
}  // namespace detail

const web_asset* find_web_asset(std::string_view path) noexcept {
  if (path == "/") path = "/index.html";
  for (const web_asset& asset : detail::embedded_web_assets()) {
    if (asset.path == path) return &asset;
  }
  return nullptr;
}

}  // namespace chatai::gateway
