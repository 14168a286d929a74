// Tests of JSON parsing, quoting and the strict field reader.
#include <doctest/doctest.h>

#include "chatai/core/json.hpp"

using namespace chatai;

TEST_CASE("parse errors give line, column and offset") {
  auto doc = json::parse("{\n  \"a\": 1,\n  \"b\": }");
  REQUIRE_FALSE(doc);
  CHECK(doc.err().code() == errc::parse_error);
  CHECK(doc.err().message().find("3:8") == 0);
  CHECK(doc.err().message().find("byte 19") != std::string::npos);
}

TEST_CASE("parse rejects invalid UTF-8") {
  CHECK_FALSE(json::parse("\"\xff\""));
  CHECK(json::parse("\"\xc3\xa9\""));
}

TEST_CASE("parse refuses documents nested deeper than max_depth, without running out of stack") {
  const std::string hostile = std::string(300000, '[') + std::string(300000, ']');
  auto doc = json::parse(hostile);
  REQUIRE_FALSE(doc);
  CHECK(doc.err().code() == errc::parse_error);
  CHECK(doc.err().message().find("nested deeper than 128 levels") != std::string::npos);
  CHECK(doc.err().message().find("byte 128") != std::string::npos);
  // Objects count as levels as well, and so does a hostile value inside a valid request.
  std::string objects;
  for (int i = 0; i < 200; ++i) objects += "{\"a\":";
  objects += "1" + std::string(200, '}');
  CHECK_FALSE(json::parse(objects));
  CHECK_FALSE(json::parse("{\"model\":\"m\",\"messages\":" + std::string(1000, '[')));

  const auto nested = [](std::size_t depth) { return std::string(depth, '[') + std::string(depth, ']'); };
  auto deepest = json::parse(nested(json::max_depth));
  REQUIRE(deepest);
  CHECK(json::to_string(*deepest) == nested(json::max_depth));
  CHECK_FALSE(json::parse(nested(json::max_depth + 1)));
}

TEST_CASE("parse keeps strings, numbers and the end of the document as before") {
  auto doc = json::parse(R"({"s":"caf\u00e9","i":-3,"u":18446744073709551615,"d":0.25,"n":null,"b":[true,false]})");
  REQUIRE(doc);
  CHECK(std::string((*doc)["s"].GetString()) == "caf\xc3\xa9");
  CHECK((*doc)["i"].GetInt64() == -3);
  CHECK((*doc)["u"].GetUint64() == 18446744073709551615ull);
  CHECK((*doc)["d"].GetDouble() == 0.25);
  CHECK((*doc)["n"].IsNull());
  CHECK((*doc)["b"][1].IsFalse());
  CHECK_FALSE(json::parse("{} {}"));
  CHECK_FALSE(json::parse(""));
}

TEST_CASE("quoting escapes control characters and repairs UTF-8") {
  CHECK(json::quoted("a\"b\\c\n\x01") == "\"a\\\"b\\\\c\\n\\u0001\"");
  CHECK(json::quoted("caf\xc3\xa9") == "\"caf\xc3\xa9\"");
  CHECK(json::quoted("bad\xff") == "\"bad\xEF\xBF\xBD\"");
  CHECK(json::quoted("\xe2\x82") == "\"\xEF\xBF\xBD\xEF\xBF\xBD\"");
  // Whatever goes in, what comes out parses.
  auto doc = json::parse(json::quoted("x\xc0\xafy\x7f"));
  REQUIRE(doc);
  CHECK(doc->IsString());
}

TEST_CASE("reader reads typed fields") {
  auto doc = json::parse(R"({"name":"m","port":8080,"ratio":0.5,"on":true,"tags":["a","b"],"n":2.0})");
  REQUIRE(doc);
  json::reader r(*doc, "test.json");
  std::string name;
  std::int64_t port = 0, n = 0;
  double ratio = 0;
  bool on = false;
  std::vector<std::string> tags;
  std::optional<std::string> missing;
  r.required("name", name);
  r.required_in_range("port", port, 1, 65535);
  r.optional("ratio", ratio);
  r.optional("on", on);
  r.optional("tags", tags);
  r.optional("missing", missing);
  r.optional("n", n);
  REQUIRE(r.finish().ok());
  CHECK(name == "m");
  CHECK(port == 8080);
  CHECK(ratio == 0.5);
  CHECK(on);
  CHECK(tags == std::vector<std::string>{"a", "b"});
  CHECK_FALSE(missing);
  CHECK(n == 2);
}

TEST_CASE("reader errors name the field path") {
  auto doc = json::parse(R"({"limits":{"max_body":"big"}})");
  REQUIRE(doc);
  json::reader r(*doc, "gate.json");
  std::int64_t max_body = 0;
  r.object("limits", true, [&](json::reader& sub) { sub.optional("max_body", max_body); });
  auto st = r.finish();
  REQUIRE_FALSE(st);
  CHECK(st.err().message() == "gate.json: field 'limits.max_body': expected an integer, got a string");
}

TEST_CASE("reader rejects unknown, duplicate, missing and out-of-range fields") {
  SUBCASE("unknown") {
    auto doc = json::parse(R"({"port":1,"prot":2})");
    json::reader r(*doc, "c");
    std::int64_t port = 0;
    r.optional("port", port);
    auto st = r.finish();
    REQUIRE_FALSE(st);
    CHECK(st.err().message() == "c: field 'prot': unknown field");
  }
  SUBCASE("duplicate") {
    auto doc = json::parse(R"({"port":1,"port":2})");
    json::reader r(*doc, "c");
    std::int64_t port = 0;
    r.optional("port", port);
    auto st = r.finish();
    REQUIRE_FALSE(st);
    CHECK(st.err().message() == "c: field 'port': appears more than once");
  }
  SUBCASE("missing") {
    auto doc = json::parse(R"({})");
    json::reader r(*doc, "c");
    std::string dir;
    r.required("state_dir", dir);
    CHECK(r.finish().err().message() == "c: field 'state_dir': is required");
  }
  SUBCASE("range") {
    auto doc = json::parse(R"({"port":70000})");
    json::reader r(*doc, "c");
    std::int64_t port = 80;
    r.optional_in_range("port", port, 1, 65535);
    CHECK(r.finish().err().message() == "c: field 'port': must be between 1 and 65535, got 70000");
    CHECK(port == 80);
  }
  SUBCASE("array element") {
    auto doc = json::parse(R"({"services":[{"id":"a"},{"id":3}]})");
    json::reader r(*doc, "c");
    std::vector<std::string> ids;
    r.object_array("services", true, [&](json::reader& s, std::size_t) {
      std::string id;
      s.required("id", id);
      ids.push_back(id);
    });
    CHECK(r.finish().err().message() == "c: field 'services[1].id': expected a string, got an integer");
  }
  SUBCASE("not an object") {
    auto doc = json::parse(R"([1,2])");
    json::reader r(*doc, "c");
    std::int64_t port = 0;
    r.optional("port", port);
    CHECK(r.finish().err().message() == "c: expected an object, got an array");
  }
}
