// Tests of config loading: errors name the file, the field and what was wrong.
#include <doctest/doctest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include <unistd.h>

#include "chatai/core/config.hpp"

using namespace chatai;
namespace fs = std::filesystem;

namespace {
struct temp_file {
  fs::path path;
  explicit temp_file(const std::string& contents) {
    path = fs::temp_directory_path() / ("chatai-config-" + std::to_string(::getpid()) + "-" +
                                        std::to_string(reinterpret_cast<std::uintptr_t>(this)) + ".json");
    std::ofstream(path) << contents;
  }
  ~temp_file() { fs::remove(path); }
};

struct server_config {
  std::string host = "127.0.0.1";
  std::int64_t port = 0;
  std::int64_t max_body = 1 << 20;
};

status load_server(const fs::path& path, server_config& out) {
  server_config c;
  auto st = config::load(path, [&](json::reader& r) {
    r.optional("host", c.host);
    r.optional_in_range("port", c.port, 0, 65535);
    r.object("limits", false, [&](json::reader& l) { l.optional_in_range("max_body", c.max_body, 1, 1 << 30); });
  });
  if (st) out = c;  // nothing is changed on error
  return st;
}
}  // namespace

TEST_CASE("a valid config loads") {
  temp_file f(R"({"host":"0.0.0.0","port":9000,"limits":{"max_body":4096}})");
  server_config c;
  REQUIRE(load_server(f.path, c).ok());
  CHECK(c.host == "0.0.0.0");
  CHECK(c.port == 9000);
  CHECK(c.max_body == 4096);
}

TEST_CASE("config errors name the file and the field, and change nothing") {
  temp_file f(R"({"host":"h","limits":{"max_body":0}})");
  server_config c;
  auto st = load_server(f.path, c);
  REQUIRE_FALSE(st);
  CHECK(st.err().message() == f.path.string() + ": field 'limits.max_body': must be between 1 and 1073741824, got 0");
  CHECK(c.host == "127.0.0.1");
}

TEST_CASE("syntax errors name the file and the position") {
  temp_file f("{\n \"port\": 80,\n}");
  server_config c;
  auto st = load_server(f.path, c);
  REQUIRE_FALSE(st);
  CHECK(st.err().message().rfind(f.path.string() + ":3:1: JSON parse error", 0) == 0);
}

TEST_CASE("a missing file is not_found and names the path") {
  server_config c;
  auto st = load_server("/nonexistent/chatai.json", c);
  REQUIRE_FALSE(st);
  CHECK(st.err().code() == errc::not_found);
  CHECK(st.err().message().find("/nonexistent/chatai.json") == 0);
}
