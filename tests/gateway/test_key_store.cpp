// Tests of the key store: keys are created, verified, expire and are revoked; the database holds
// only salted hashes, never a secret; usage is written by the writer thread and summed.
#include <doctest/doctest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "chatai/gate/breaker.hpp"
#include "chatai/gateway/key_store.hpp"

using namespace chatai;
using namespace chatai::gateway;
namespace fs = std::filesystem;

namespace {

struct temp_db {
  fs::path dir;
  fs::path path;
  temp_db() {
    std::random_device rd;
    dir = fs::temp_directory_path() / ("chatai-gateway-test-" + std::to_string(::getpid()) + "-" + std::to_string(rd()));
    fs::create_directories(dir);
    path = dir / "gateway.db";
  }
  ~temp_db() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
};

// Every byte of the database and its WAL file.
std::string database_bytes(const fs::path& path) {
  std::string all;
  for (const auto& p : {path, fs::path(path.string() + "-wal")}) {
    std::ifstream in(p, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    all += ss.str();
  }
  return all;
}

}  // namespace

TEST_CASE("a created key verifies; a wrong secret, an unknown id and junk do not") {
  temp_db db;
  auto store = key_store::open(db.path);
  REQUIRE(store);
  const std::int64_t now = gate::unix_ms_now();
  auto key = (*store)->create("alice", std::nullopt, {});
  REQUIRE(key);
  CHECK(key->key.rfind("sk-chatai-" + key->info.id + "-", 0) == 0);
  CHECK(key->key.size() == std::string("sk-chatai-").size() + 12 + 1 + 64);

  auto ok = (*store)->verify(key->key, now);
  REQUIRE(ok);
  CHECK(ok->user == "alice");
  CHECK(ok->id == key->info.id);

  std::string wrong = key->key;
  wrong.back() = wrong.back() == '0' ? '1' : '0';
  CHECK((*store)->verify(wrong, now).err().code() == errc::permission_denied);
  std::string other_id = key->key;
  other_id[10] = other_id[10] == 'a' ? 'b' : 'a';
  CHECK(!(*store)->verify(other_id, now));
  for (const char* junk : {"", "sk-chatai-", "Bearer x", "sk-chatai-abc-def", "sk-other-123456789012-00"})
    CHECK(!(*store)->verify(junk, now));
}

TEST_CASE("the database holds salted hashes only, owner-readable") {
  temp_db db;
  std::string secret_hex;
  {
    auto store = key_store::open(db.path);
    REQUIRE(store);
    auto a = (*store)->create("alice", std::nullopt, {});
    auto b = (*store)->create("bob", std::nullopt, {});
    REQUIRE(a);
    REQUIRE(b);
    secret_hex = a->key.substr(a->key.rfind('-') + 1);
    auto list = (*store)->list();
    REQUIRE(list);
    CHECK(list->size() == 2);
  }
  const std::string bytes = database_bytes(db.path);
  CHECK(bytes.find(secret_hex) == std::string::npos);
  CHECK(bytes.find(secret_hex.substr(0, 16)) == std::string::npos);
  struct stat st{};
  REQUIRE(::stat(db.path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
}

TEST_CASE("keys expire and can be revoked; limits are kept per key") {
  temp_db db;
  auto store = key_store::open(db.path);
  REQUIRE(store);
  const std::int64_t now = gate::unix_ms_now();
  auto soon = (*store)->create("carol", now + 1000, {std::int64_t{5}, std::int64_t{1}});
  REQUIRE(soon);
  auto ok = (*store)->verify(soon->key, now);
  REQUIRE(ok);
  CHECK(ok->limits.requests_per_minute == 5);
  CHECK(ok->limits.concurrent_streams == 1);
  auto expired = (*store)->verify(soon->key, now + 1000);
  REQUIRE(!expired);
  CHECK(expired.err().message().find("expired") != std::string::npos);

  auto k = (*store)->create("dave", std::nullopt, {});
  REQUIRE(k);
  REQUIRE((*store)->revoke(k->info.id, now));
  auto revoked = (*store)->verify(k->key, now);
  REQUIRE(!revoked);
  CHECK(revoked.err().message().find("revoked") != std::string::npos);
  CHECK((*store)->revoke(k->info.id, now + 5));  // twice is fine
  CHECK((*store)->revoke("000000000000", now).err().code() == errc::not_found);
  auto list = (*store)->list();
  REQUIRE(list);
  const auto listed = std::find_if(list->begin(), list->end(), [&](const key_info& i) { return i.id == k->info.id; });
  REQUIRE(listed != list->end());
  CHECK(listed->revoked_at_ms == now);

  CHECK((*store)->create("", std::nullopt, {}).err().code() == errc::invalid_argument);
  CHECK((*store)->create("a\nb", std::nullopt, {}).err().code() == errc::invalid_argument);
  CHECK(!(*store)->create("eve", std::nullopt, {std::int64_t{-1}, std::nullopt}));
}

TEST_CASE("usage is written in the background and summed per key and per user") {
  temp_db db;
  auto store = key_store::open(db.path);
  REQUIRE(store);
  (*store)->record({"r1", "k1", "alice", "smol", 200, 10, 5, 1000, 3});
  (*store)->record({"r2", "k1", "alice", "smol", 200, 1, 2, 2000, 3});
  (*store)->record({"r3", "k2", "alice", "smol", 429, 0, 0, 3000, 1});
  (*store)->record({"r4", "", "bob", "smol", 200, 7, 7, 4000, 1});
  (*store)->flush();
  auto all = (*store)->usage(std::nullopt);
  REQUIRE(all);
  REQUIRE(all->by_key.size() == 2);
  CHECK(all->by_key[0].key_id == "k1");
  CHECK(all->by_key[0].requests == 2);
  CHECK(all->by_key[0].prompt_tokens == 11);
  CHECK(all->by_key[0].completion_tokens == 7);
  REQUIRE(all->by_user.size() == 2);
  CHECK(all->by_user[0].user == "alice");
  CHECK(all->by_user[0].requests == 3);
  CHECK(all->by_user[1].user == "bob");
  CHECK(all->by_user[1].prompt_tokens == 7);
  auto recent = (*store)->usage(2500);
  REQUIRE(recent);
  CHECK(recent->by_user[0].requests == 1);
}

TEST_CASE("usage queued at close is written") {
  temp_db db;
  {
    auto store = key_store::open(db.path);
    REQUIRE(store);
    for (int i = 0; i < 100; ++i) (*store)->record({"r" + std::to_string(i), "k", "u", "m", 200, 1, 1, i, 1});
  }
  auto store = key_store::open(db.path);
  REQUIRE(store);
  auto all = (*store)->usage(std::nullopt);
  REQUIRE(all);
  REQUIRE(all->by_user.size() == 1);
  CHECK(all->by_user[0].requests == 100);
}

TEST_CASE("times from the command line") {
  const std::int64_t now = 1'700'000'000'000;
  CHECK(*parse_time("30d", now, true) == now + 30LL * 86400000);
  CHECK(*parse_time("12h", now, false) == now - 12LL * 3600000);
  CHECK(*parse_time("90s", now, true) == now + 90000);
  CHECK(*parse_time("2026-12-31", now, true) == 1798675200000);
  CHECK(*parse_time("2026-12-31T18:00:00Z", now, true) == 1798675200000 + 18LL * 3600000);
  for (const char* bad : {"", "d", "30x", "-3d", "2026-13-45", "2026-12-31T18:00:00", "tomorrow"})
    CHECK(parse_time(bad, now, true).err().code() == errc::invalid_argument);
  CHECK(format_time(1798675200000) == "2026-12-31T00:00:00Z");
}

TEST_CASE("a key created by another connection is seen at once") {
  temp_db db;
  auto gateway_side = key_store::open(db.path);
  REQUIRE(gateway_side);
  auto first = (*gateway_side)->create("alice", std::nullopt, {});
  REQUIRE(first);
  CHECK((*gateway_side)->verify(first->key, gate::unix_ms_now()));
  for (int i = 0; i < 3; ++i) {
    auto admin = key_store::open(db.path);  // as `chatai keys` does, while the gateway runs
    REQUIRE(admin);
    auto key = (*admin)->create("user" + std::to_string(i), std::nullopt, {});
    REQUIRE(key);
    admin->reset();
    CHECK((*gateway_side)->verify(key->key, gate::unix_ms_now()));
  }
}
