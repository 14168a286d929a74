// The chat page compiled into the library: every file of src/gateway/web is found with its
// bytes and content type, and the embedding gives each content its own ETag.
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>

#include <doctest/doctest.h>

#include "chatai/core/subprocess.hpp"
#include "chatai/gateway/web_assets.hpp"

namespace fs = std::filesystem;
using chatai::gateway::find_web_asset;

namespace {

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::string expected_type(const std::string& extension) {
  if (extension == ".html") return "text/html; charset=utf-8";
  if (extension == ".js") return "text/javascript; charset=utf-8";
  if (extension == ".css") return "text/css; charset=utf-8";
  if (extension == ".svg") return "image/svg+xml";
  FAIL("a web file with an unexpected extension: " << extension);
  return {};
}

// Runs cmake/embed_files.cmake on `dir` and returns the ETag it gives to "/a.txt".
std::string embedded_etag(const fs::path& dir) {
  const fs::path output = dir.parent_path() / "assets.cpp";
  auto run = chatai::run_subprocess({.argv = {CHATAI_CMAKE_COMMAND, "-DINPUT_DIR=" + dir.string(),
                                              "-DOUTPUT=" + output.string(), "-P",
                                              CHATAI_SOURCE_DIR "/cmake/embed_files.cmake"}});
  REQUIRE(run.ok());
  REQUIRE_MESSAGE(run.value().exit_code == 0, run.value().err);
  const std::string source = read_file(output);
  std::smatch match;
  REQUIRE(std::regex_search(source, match, std::regex(R"re(\{"/a\.txt", "text/plain; charset=utf-8", \{body_0, 3\}, "(\\"[0-9a-f]{20}\\")"\})re")));
  return match[1];
}

}  // namespace

TEST_CASE("every file of the chat page is embedded with its content type and an ETag") {
  const fs::path web = CHATAI_SOURCE_DIR "/src/gateway/web";
  std::set<std::string> etags;
  int files = 0;
  for (const auto& entry : fs::directory_iterator(web)) {
    const std::string path = "/" + entry.path().filename().string();
    CAPTURE(path);
    const auto* asset = find_web_asset(path);
    REQUIRE(asset != nullptr);
    CHECK(asset->path == path);
    CHECK(asset->body == read_file(entry.path()));
    CHECK(asset->content_type == expected_type(entry.path().extension().string()));
    CHECK(std::regex_match(std::string(asset->etag), std::regex(R"("[0-9a-f]{20}")")));
    etags.insert(std::string(asset->etag));
    ++files;
  }
  CHECK(files >= 4);
  CHECK(etags.size() == static_cast<std::size_t>(files));
}

TEST_CASE("the root is the page and unknown paths are not found") {
  const auto* root = find_web_asset("/");
  REQUIRE(root != nullptr);
  CHECK(root == find_web_asset("/index.html"));
  CHECK(root->body.find("<script type=\"module\" src=\"app.js\"></script>") != std::string_view::npos);
  for (const char* path : {"", "index.html", "/index.htm", "/INDEX.HTML", "/../CMakeLists.txt", "/web/app.js",
                           "/index.html?x=1", "//index.html"}) {
    CAPTURE(path);
    CHECK(find_web_asset(path) == nullptr);
  }
}

TEST_CASE("the ETag follows the content") {
  const fs::path root = CHATAI_BINARY_DIR "/tests/gateway/embed-etag";
  const fs::path dir = root / "web";
  fs::remove_all(root);
  fs::create_directories(dir);
  std::ofstream(dir / "a.txt", std::ios::binary) << "one";
  const std::string first = embedded_etag(dir);
  CHECK(embedded_etag(dir) == first);
  std::ofstream(dir / "a.txt", std::ios::binary) << "two";
  const std::string second = embedded_etag(dir);
  CHECK(second != first);
  std::ofstream(dir / "a.txt", std::ios::binary) << "one";
  CHECK(embedded_etag(dir) == first);
  fs::remove_all(root);
}
