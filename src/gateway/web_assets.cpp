// The chat page's files: a one-page placeholder until the page's generated assets replace it.
#include "chatai/gateway/web_assets.hpp"

namespace chatai::gateway {

namespace {

constexpr web_asset index_html{
    "/index.html", "text/html; charset=utf-8",
    "<!doctype html><html><head><meta charset=\"utf-8\"><title>chatai</title></head><body>chatai</body></html>\n",
    "\"chatai-index-1\""};

}  // namespace

const web_asset* find_web_asset(std::string_view path) noexcept {
  if (path == "/" || path == index_html.path) return &index_html;
  return nullptr;
}

}  // namespace chatai::gateway
