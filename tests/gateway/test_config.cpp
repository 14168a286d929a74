// Tests of the gateway's config: defaults, both transports, and errors that name the field.
#include <doctest/doctest.h>

#include "chatai/gateway/config.hpp"

using namespace chatai;
using namespace chatai::gateway;

namespace {

std::string with(const std::string& extra) {
  return R"({"database":"/tmp/g.db","transport":{"kind":"local","gate_program":"/bin/gate","gate_config":"/etc/gate.json"})" +
         extra + "}";
}

std::string error_of(const std::string& text) {
  auto c = parse_config(text, "gateway.json");
  REQUIRE(!c);
  return c.err().message();
}

}  // namespace

TEST_CASE("a minimal config takes the defaults") {
  auto c = parse_config(with(""), "gateway.json");
  REQUIRE(c);
  CHECK(c->host == "127.0.0.1");
  CHECK(c->port == 8080);
  CHECK(c->transport == transport_kind::local);
  CHECK(c->local.gate_program == "/bin/gate");
  CHECK(c->default_limits.requests_per_minute == 60);
  CHECK(c->chat_page);
  CHECK(!c->sso);
}

TEST_CASE("every section is read") {
  auto c = parse_config(R"({"listen":{"host":"::1","port":0,"io_threads":4},"database":"g.db",
    "transport":{"kind":"ssh","host":"login","port":2222,"user":"chatai","key_file":"/k","known_hosts":"/kh",
                 "trust_on_first_use":true,"sessions":2,"channels_per_session":8,"keep_alive_interval_ms":1000},
    "limits":{"requests_per_minute":10,"concurrent_streams":0},
    "sso":{"header":"X-Remote-User","trusted_proxies":["127.0.0.1","::1"]},
    "chat_page":false,"max_body_bytes":1000,
    "timeouts":{"first_byte_ms":5,"idle_ms":6,"status_refresh_ms":100,"shutdown_grace_ms":0}})",
                        "gateway.json");
  REQUIRE(c);
  CHECK(c->host == "::1");
  CHECK(c->port == 0);
  CHECK(c->io_threads == 4);
  CHECK(c->transport == transport_kind::ssh);
  CHECK(c->ssh.port == 2222);
  CHECK(c->ssh.trust_on_first_use);
  CHECK(c->ssh.keep_alive_interval == std::chrono::milliseconds(1000));
  CHECK(c->default_limits.requests_per_minute == 10);
  CHECK(c->default_limits.concurrent_streams == 0);
  REQUIRE(c->sso);
  CHECK(c->sso->trusted_proxies.size() == 2);
  CHECK_FALSE(c->chat_page);
  CHECK(c->max_body_bytes == 1000);
  CHECK(c->status_refresh == std::chrono::milliseconds(100));
}

TEST_CASE("errors name the file and the field") {
  CHECK(error_of(R"({"transport":{"kind":"local","gate_program":"g","gate_config":"c"}})").find("'database'") != std::string::npos);
  const auto port = error_of(with(R"(,"listen":{"port":"80"})"));
  CHECK(port.find("gateway.json") != std::string::npos);
  CHECK(port.find("listen.port") != std::string::npos);
  CHECK(error_of(with(R"(,"listen":{"port":70000})")).find("listen.port") != std::string::npos);
  CHECK(error_of(with(R"(,"listen":{"host":"localhost"})")).find("listen.host") != std::string::npos);
  CHECK(error_of(with(R"(,"limits":{"rpm":5})")).find("limits.rpm") != std::string::npos);
  CHECK(error_of(with(R"(,"sso":{"header":"X-User","trusted_proxies":["proxy.example"]})")).find("sso.trusted_proxies") !=
        std::string::npos);
  CHECK(error_of(with(R"(,"timeouts":{"idle_ms":-1})")).find("timeouts.idle_ms") != std::string::npos);
  CHECK(error_of(R"({"database":"d","transport":{"kind":"tcp"}})").find("transport.kind") != std::string::npos);
  // A field of the other transport is unknown.
  CHECK(error_of(R"({"database":"d","transport":{"kind":"local","gate_program":"g","gate_config":"c","host":"h"}})")
            .find("transport.host") != std::string::npos);
  CHECK(error_of(with(R"(,"chat_pages":true)")).find("chat_pages") != std::string::npos);
}
