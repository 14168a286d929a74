// Tests of log line rendering.
#include <doctest/doctest.h>

#include "chatai/core/json.hpp"
#include "chatai/core/log.hpp"

using namespace chatai;

TEST_CASE("json log lines are valid JSON with the fields") {
  const auto line = log::render(log::level::warn, "backend \"x\" failed", {{"backend", "10.0.0.1:8000"}, {"code", "502"}},
                                log::format::json);
  REQUIRE(line.back() == '\n');
  auto doc = json::parse(line);
  REQUIRE(doc);
  CHECK(std::string((*doc)["level"].GetString()) == "warn");
  CHECK(std::string((*doc)["msg"].GetString()) == "backend \"x\" failed");
  CHECK(std::string((*doc)["backend"].GetString()) == "10.0.0.1:8000");
}

TEST_CASE("text log lines quote values with spaces") {
  const auto line = log::render(log::level::info, "started", {{"path", "/a b"}, {"port", "80"}}, log::format::text);
  CHECK(line.find(" info started path=\"/a b\" port=80\n") != std::string::npos);
}

TEST_CASE("levels parse and filter") {
  log::level lvl{};
  CHECK(log::parse_level("warn", lvl));
  CHECK(lvl == log::level::warn);
  CHECK_FALSE(log::parse_level("loud", lvl));
  log::set_level(log::level::error);
  CHECK_FALSE(log::enabled(log::level::info));
  CHECK(log::enabled(log::level::error));
  log::set_level(log::level::info);
}
