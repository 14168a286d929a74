// Tests of status and result.
#include <doctest/doctest.h>

#include <memory>

#include "chatai/core/status.hpp"

using namespace chatai;

namespace {
result<int> parse_positive(int v) {
  if (v <= 0) return error(errc::invalid_argument, "not positive");
  return v;
}

status twice(int v, int& out) {
  auto r = parse_positive(v);
  if (!r) return std::move(r).err().with_context("twice");
  out = *r * 2;
  return {};
}

status chain(int v) {
  int out = 0;
  CHATAI_RETURN_IF_ERROR(twice(v, out));
  return {};
}
}  // namespace

TEST_CASE("result holds a value or an error") {
  auto good = parse_positive(3);
  REQUIRE(good.ok());
  CHECK(*good == 3);
  auto bad = parse_positive(-1);
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.err().code() == errc::invalid_argument);
  CHECK(bad.err().message() == "not positive");
}

TEST_CASE("errors gain context and propagate") {
  int out = 0;
  CHECK(twice(4, out).ok());
  CHECK(out == 8);
  auto st = chain(0);
  REQUIRE_FALSE(st.ok());
  CHECK(st.err().message() == "twice: not positive");
  CHECK(to_string(st.err().code()) == "invalid_argument");
}

TEST_CASE("result moves only-movable values") {
  result<std::unique_ptr<int>> r(std::make_unique<int>(7));
  REQUIRE(r);
  auto p = std::move(r).value();
  CHECK(*p == 7);
}
