// Tests of the state directory: registry documents and their atomic replacement, job keys,
// start flags, in-flight markers (also of killed processes) and the shared circuit breaker.
#include <doctest/doctest.h>

#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <atomic>
#include <set>
#include <thread>

#include "chatai/core/json.hpp"
#include "chatai/gate/breaker.hpp"
#include "chatai/gate/gate.hpp"
#include "chatai/proto/wire.hpp"
#include "gate_test_util.hpp"

using namespace chatai;
using namespace chatai::gate;
using namespace chatai::gate::testing;

TEST_CASE("a registry survives a round trip and bad ones are refused") {
  slurm::registry reg;
  reg.generation = 4;
  reg.services.push_back({"chat", {"smol", "smol-2"}, true});
  reg.services.push_back({"embed:v1", {}, false});
  reg.backends.push_back({"1234", "chat", "gpu01", 8000, slurm::backend_state::ready, "1234.key"});
  reg.backends.push_back({"1235_7", "embed:v1", "10.0.0.2", 9000, slurm::backend_state::draining, "k"});
  auto back = slurm::parse_registry(slurm::to_json(reg));
  REQUIRE(back);
  CHECK(back->generation == 4);
  REQUIRE(back->services.size() == 2);
  CHECK(back->services[0].models == std::vector<std::string>{"smol", "smol-2"});
  CHECK(back->services[0].can_scale_from_zero);
  REQUIRE(back->backends.size() == 2);
  CHECK(back->backends[1].state == slurm::backend_state::draining);
  CHECK(back->find_service("embed:v1") != nullptr);
  CHECK(back->find_service("nope") == nullptr);

  const std::string head = R"({"version":1,"generation":1,"services":[{"id":"chat"}],"backends":[)";
  for (const std::string& bad : std::vector<std::string>{
           R"({"version":2,"generation":1,"services":[],"backends":[]})",
           R"({"version":1,"generation":1,"services":[{"id":".."}],"backends":[]})",
           R"({"version":1,"generation":1,"services":[{"id":"a/b"}],"backends":[]})",
           R"({"version":1,"generation":1,"services":[{"id":"a"},{"id":"a"}],"backends":[]})",
           head + R"({"job":"1","service":"other","host":"h","port":1,"state":"ready","key_file":"k"}]})",
           head + R"({"job":"../1","service":"chat","host":"h","port":1,"state":"ready","key_file":"k"}]})",
           head + R"({"job":"1","service":"chat","host":"h@evil","port":1,"state":"ready","key_file":"k"}]})",
           head + R"({"job":"1","service":"chat","host":"h","port":0,"state":"ready","key_file":"k"}]})",
           head + R"({"job":"1","service":"chat","host":"h","port":1,"state":"up","key_file":"k"}]})",
           head + R"({"job":"1","service":"chat","host":"h","port":1,"state":"ready","key_file":"../k"}]})",
           head + R"({"job":"1","service":"chat","host":"h","port":1,"state":"ready","key_file":"k"},)"
                  R"({"job":"1","service":"chat","host":"h","port":2,"state":"ready","key_file":"k"}]})",
       }) {
    CAPTURE(bad);
    CHECK_FALSE(slurm::parse_registry(bad));
  }
}

TEST_CASE("a registry nested without bound is refused, not recursed into") {
  const std::string hostile = R"({"version":1,"generation":1,"services":)" + std::string(300000, '[') +
                              std::string(300000, ']') + R"(,"backends":[]})";
  auto reg = slurm::parse_registry(hostile);
  REQUIRE_FALSE(reg);
  CHECK(reg.err().message().find("nested deeper than 128 levels") != std::string::npos);
}

TEST_CASE("a state folder with a symbolic link, a foreign owner or group-writable folders is refused") {
  gate_fixture fx;
  fx.publish();
  const auto dir = fx.state();
  CHECK(slurm::check_state_dir(dir));
  CHECK(slurm::check_state_dir(slurm::state_dir(fx.dir.path / "not-made-yet")));

  // A subfolder that is a link to somewhere else: refused by the check and by ensure_dir.
  temp_dir elsewhere;
  fs::create_symlink(elsewhere.path, dir.inflight_dir());
  auto linked = slurm::check_state_dir(dir);
  REQUIRE_FALSE(linked);
  CHECK(linked.err().code() == errc::permission_denied);
  CHECK(linked.err().message() == dir.inflight_dir().string() + ": is a symbolic link; the state folder and its "
                                                                "subfolders must be real folders");
  CHECK_FALSE(slurm::ensure_dir(dir.inflight_dir()));
  CHECK_FALSE(slurm::inflight_marker::create(dir, "chat"));
  CHECK(listing(elsewhere.path).empty());
  fs::remove(dir.inflight_dir());

  // Writable by the group: anyone in it could plant a registry or keys.
  ::chmod(dir.root().c_str(), 0770);
  auto open = slurm::check_state_dir(dir);
  REQUIRE_FALSE(open);
  CHECK(open.err().message() == dir.root().string() + ": is writable by group or others (mode 0770); chmod go-w it");
  CHECK_FALSE(slurm::write_registry(dir, fx.reg));
  ::chmod(dir.root().c_str(), 0700);

  // Owned by another user (only root can hand a folder to someone else).
  if (::geteuid() == 0) {
    REQUIRE(slurm::ensure_dir(dir.keys_dir()));
    REQUIRE(::chown(dir.keys_dir().c_str(), 65534, 65534) == 0);
    auto foreign = slurm::check_state_dir(dir);
    REQUIRE_FALSE(foreign);
    CHECK(foreign.err().message().find(dir.keys_dir().string() + ": is owned by uid 65534") == 0);
    CHECK_FALSE(slurm::write_job_key(dir, "7.key", "0123456789abcdef-secret"));
    REQUIRE(::chown(dir.keys_dir().c_str(), 0, 0) == 0);
  }
  CHECK(slurm::check_state_dir(dir));

  // The gate does nothing with such a folder: every verb stops before reading or writing it.
  ::chmod(dir.root().c_str(), 0777);
  const auto before = listing(fx.config.state_dir);
  CHECK(run_verb(fx.config, verb::keep_alive, "").exit_code == exit_usage);
  CHECK(run_verb(fx.config, verb::status, "").exit_code == exit_usage);
  const auto refused = run_verb(fx.config, verb::request, "{}\n");
  CHECK(refused.exit_code == exit_usage);
  CHECK(refused.out.empty());
  CHECK(listing(fx.config.state_dir) == before);
  ::chmod(dir.root().c_str(), 0700);
}

TEST_CASE("writing the registry replaces it whole and counts generations") {
  gate_fixture fx;
  fx.publish();
  fx.publish();
  auto reg = slurm::read_registry(fx.state());
  REQUIRE(reg);
  CHECK(reg->generation == 2);
  for (const auto& name : listing(fx.config.state_dir)) CHECK(name.find(".registry.json.") == std::string::npos);
  struct stat info{};
  REQUIRE(::stat(fx.state().registry_file().c_str(), &info) == 0);
  CHECK((info.st_mode & 0777) == 0600);
}

TEST_CASE("job keys are kept owner-only and checked when read") {
  gate_fixture fx;
  const auto dir = fx.state();
  REQUIRE(slurm::write_job_key(dir, "42.key", "0123456789abcdef-secret"));
  CHECK(slurm::read_job_key(dir, "42.key").value() == "0123456789abcdef-secret");
  CHECK_FALSE(slurm::write_job_key(dir, "../42.key", "0123456789abcdef-secret"));
  CHECK_FALSE(slurm::write_job_key(dir, "43.key", "short"));
  CHECK_FALSE(slurm::write_job_key(dir, "43.key", "with space 0123456789"));
  CHECK_FALSE(slurm::read_job_key(dir, "../registry.json"));
  CHECK(slurm::read_job_key(dir, "missing.key").err().code() == errc::not_found);

  ::chmod((dir.keys_dir() / "42.key").c_str(), 0644);
  auto open_key = slurm::read_job_key(dir, "42.key");
  REQUIRE_FALSE(open_key);
  CHECK(open_key.err().code() == errc::permission_denied);

  fs::create_symlink(dir.keys_dir() / "42.key", dir.keys_dir() / "link.key");
  CHECK_FALSE(slurm::read_job_key(dir, "link.key"));
}

TEST_CASE("start flags are set by gates and taken by the scheduler") {
  gate_fixture fx;
  CHECK(slurm::take_start_request(fx.state(), "chat").value() == false);
  REQUIRE(slurm::request_start(fx.state(), "chat"));
  REQUIRE(slurm::request_start(fx.state(), "chat"));
  CHECK(slurm::take_start_request(fx.state(), "chat").value() == true);
  CHECK(slurm::take_start_request(fx.state(), "chat").value() == false);
  CHECK_FALSE(slurm::request_start(fx.state(), "../x"));
}

TEST_CASE("in-flight markers are counted while held and vanish with their holder") {
  gate_fixture fx;
  const auto dir = fx.state();
  CHECK(slurm::count_inflight(dir)->by_service.empty());
  {
    auto a = slurm::inflight_marker::create(dir, "chat");
    auto b = slurm::inflight_marker::create(dir, "chat");
    REQUIRE(a);
    REQUIRE(b);
    REQUIRE(a->set_backend("101"));
    auto counts = slurm::count_inflight(dir);
    REQUIRE(counts);
    CHECK(counts->by_service["chat"] == 2);
    CHECK(counts->by_job["101"] == 1);
    REQUIRE(a->set_backend("102"));
    counts = slurm::count_inflight(dir);
    CHECK(counts->by_job.count("101") == 0);
    CHECK(counts->by_job["102"] == 1);
  }
  CHECK(slurm::count_inflight(dir)->by_service.empty());
  CHECK(listing(dir.inflight_dir()).empty());

  // A gate killed mid-request leaves its file but not its lock: counting removes it.
  const pid_t child = ::fork();
  if (child == 0) {
    auto m = slurm::inflight_marker::create(dir, "chat");
    ::_exit(m ? 0 : 1);
  }
  int wstatus = 0;
  REQUIRE(::waitpid(child, &wstatus, 0) == child);
  REQUIRE(WEXITSTATUS(wstatus) == 0);
  CHECK(listing(dir.inflight_dir()).size() == 1);
  CHECK(slurm::count_inflight(dir)->by_service.empty());
  CHECK(listing(dir.inflight_dir()).empty());
}

TEST_CASE("many markers are counted through /proc/locks exactly as one by one, and dead ones are swept") {
  gate_fixture fx;
  const auto dir = fx.state();
  std::vector<slurm::inflight_marker> held;
  for (int i = 0; i < 30; ++i) {
    auto m = slurm::inflight_marker::create(dir, i % 3 ? "chat" : "code");
    REQUIRE(m);
    if (i % 2) REQUIRE(m->set_backend("101"));
    held.push_back(std::move(*m));
  }
  // Markers of gates that died: whole and visible, but nobody holds their lock.
  for (int i = 0; i < 5; ++i) {
    const fs::path dead = dir.inflight_dir() / ("chat@101@dead" + std::to_string(i));
    unique_fd(::open(dead.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
  }
  // A lock on another file of the same folder's device counts for nothing.
  const fs::path other = fx.dir.path / "unrelated";
  unique_fd unrelated(::open(other.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  const int locked = ::flock(unrelated.get(), LOCK_EX);
  REQUIRE(locked == 0);
  auto counts = slurm::count_inflight(dir);
  REQUIRE(counts);
  CHECK(counts->by_service["chat"] == 20);
  CHECK(counts->by_service["code"] == 10);
  CHECK(counts->by_job["101"] == 15);
  CHECK(listing(dir.inflight_dir()).size() == 30);
  held.erase(held.begin() + 4, held.end());  // 26 requests end
  counts = slurm::count_inflight(dir);
  CHECK(counts->by_service["chat"] + counts->by_service["code"] == 4);
}

TEST_CASE("a pool reuses its marker files: counted while in flight, idle ones never, deleted when it closes") {
  gate_fixture fx;
  const auto dir = fx.state();
  auto pool = std::make_shared<slurm::marker_pool>();
  const auto inode_of = [&](const std::string& prefix) {
    for (const auto& entry : fs::directory_iterator(dir.inflight_dir()))
      if (entry.path().filename().string().rfind(prefix, 0) == 0) {
        struct stat info{};
        REQUIRE(::stat(entry.path().c_str(), &info) == 0);
        return info.st_ino;
      }
    return ino_t{0};
  };
  ino_t first = 0;
  {
    auto a = slurm::inflight_marker::create(dir, "chat", pool);
    REQUIRE(a);
    REQUIRE(a->set_backend("101"));
    first = inode_of("chat@101@");
    CHECK(first != 0);
    CHECK(slurm::count_inflight(dir)->by_job["101"] == 1);
  }
  CHECK(pool->idle() == 1);
  CHECK(slurm::count_inflight(dir)->by_service.empty());
  REQUIRE(listing(dir.inflight_dir()).size() == 1);
  CHECK(listing(dir.inflight_dir()).begin()->front() == '+');
  {
    // The next request takes the same file; a second one at once gets a new one.
    auto a = slurm::inflight_marker::create(dir, "code", pool);
    auto b = slurm::inflight_marker::create(dir, "code", pool);
    REQUIRE(a);
    REQUIRE(b);
    REQUIRE(a->set_backend("102"));
    CHECK(inode_of("code@102@") == first);
    CHECK(slurm::count_inflight(dir)->by_service["code"] == 2);
    CHECK(pool->idle() == 0);
  }
  CHECK(pool->idle() == 2);
  // A held idle file is never swept, however old.
  for (const auto& name : listing(dir.inflight_dir()))
    fs::last_write_time(dir.inflight_dir() / name, fs::file_time_type::clock::now() - std::chrono::minutes(5));
  REQUIRE(slurm::sweep_idle_markers(dir));
  CHECK(listing(dir.inflight_dir()).size() == 2);
  auto late = slurm::inflight_marker::create(dir, "chat", pool);
  REQUIRE(late);
  pool->close();
  CHECK(listing(dir.inflight_dir()).size() == 1);  // the marker still in flight
  CHECK(slurm::count_inflight(dir)->by_service["chat"] == 1);
  late = slurm::inflight_marker::create(dir, "chat", pool);  // the old one ends: deleted
  CHECK(listing(dir.inflight_dir()).size() == 1);
  REQUIRE(late);

  // The idle files of a session gate that was killed: kept while the process lives, swept
  // (once old) when it is gone; never counted.
  const pid_t child = ::fork();
  if (child == 0) {
    auto child_pool = std::make_shared<slurm::marker_pool>();
    { auto m = slurm::inflight_marker::create(dir, "chat", child_pool); }
    ::_exit(child_pool->idle() == 1 ? 0 : 1);
  }
  int wstatus = 0;
  REQUIRE(::waitpid(child, &wstatus, 0) == child);
  REQUIRE(WEXITSTATUS(wstatus) == 0);
  CHECK(listing(dir.inflight_dir()).size() == 2);
  CHECK(slurm::count_inflight(dir)->by_service["chat"] == 1);
  REQUIRE(slurm::sweep_idle_markers(dir));
  CHECK(listing(dir.inflight_dir()).size() == 2);  // young: its maker might be about to lock it
  for (const auto& name : listing(dir.inflight_dir()))
    if (name.front() == '+')
      fs::last_write_time(dir.inflight_dir() / name, fs::file_time_type::clock::now() - std::chrono::minutes(5));
  REQUIRE(slurm::sweep_idle_markers(dir));
  CHECK(listing(dir.inflight_dir()).size() == 1);
}

TEST_CASE("markers made while others count them are all made, and only stale half-made ones are swept") {
  gate_fixture fx;
  const auto dir = fx.state();
  REQUIRE(slurm::ensure_dir(dir.root()));
  REQUIRE(slurm::ensure_dir(dir.inflight_dir()));
  std::atomic<bool> done{false};
  std::thread counter([&] {
    while (!done) (void)slurm::count_inflight(dir);
  });
  int failed = 0;
  for (int i = 0; i < 3000; ++i) {
    if (!slurm::inflight_marker::create(dir, "chat")) ++failed;
  }
  done = true;
  counter.join();
  CHECK(failed == 0);

  CHECK(listing(dir.inflight_dir()).empty());

  // Markers being made that their makers left behind (also under an earlier version's hidden
  // name): never counted, kept while young, swept once old.
  const fs::path young = dir.inflight_dir() / "+young";
  const fs::path old = dir.inflight_dir() / "+old";
  const fs::path old_hidden = dir.inflight_dir() / ".old";
  for (const auto& p : {young, old, old_hidden}) unique_fd(::open(p.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
  for (const auto& p : {old, old_hidden}) fs::last_write_time(p, fs::file_time_type::clock::now() - std::chrono::minutes(5));
  CHECK(slurm::count_inflight(dir)->by_service.empty());
  CHECK(listing(dir.inflight_dir()).size() == 3);
  REQUIRE(slurm::sweep_idle_markers(dir));
  CHECK(fs::exists(young));
  CHECK_FALSE(fs::exists(old));
  CHECK_FALSE(fs::exists(old_hidden));
}

TEST_CASE("the breaker opens after N failures, lets one probe through after the cool-down, and closes on success") {
  gate_fixture fx;
  breaker_settings settings;
  settings.failure_threshold = 2;
  settings.cooldown = std::chrono::milliseconds(1000);
  breaker a(fx.state(), "101", settings);
  breaker b(fx.state(), "101", settings);  // another gate process, same file
  const std::int64_t t = 1'000'000;

  CHECK(a.try_acquire(t).value());
  REQUIRE(a.record_failure(t));
  CHECK(b.try_acquire(t).value());
  REQUIRE(b.record_success());
  REQUIRE(a.record_failure(t));
  REQUIRE(b.record_failure(t + 1));
  CHECK(a.read()->state == breaker_state::open);
  CHECK_FALSE(a.try_acquire(t + 500).value());
  CHECK_FALSE(b.try_acquire(t + 999).value());

  // Cool-down over: exactly one probe.
  CHECK(b.try_acquire(t + 1001).value());
  CHECK(a.read()->state == breaker_state::half_open);
  CHECK_FALSE(a.try_acquire(t + 1002).value());
  // The probe fails: open again for a whole cool-down.
  REQUIRE(b.record_failure(t + 1100));
  CHECK(a.read()->state == breaker_state::open);
  CHECK_FALSE(a.try_acquire(t + 2000).value());
  // The next probe's gate dies: after one more cool-down another probe goes.
  CHECK(a.try_acquire(t + 2100).value());
  CHECK_FALSE(b.try_acquire(t + 2500).value());
  CHECK(b.try_acquire(t + 3101).value());
  REQUIRE(b.record_success());
  CHECK(a.read()->state == breaker_state::closed);
  CHECK(a.read()->consecutive_failures == 0);

  // A torn or foreign file reads as closed rather than stopping the backend.
  std::ofstream(fx.state().breakers_dir() / "101") << "garbage";
  CHECK(a.try_acquire(t).value());
  CHECK_FALSE(breaker(fx.state(), "../x", settings).try_acquire(t));
}

TEST_CASE("equal loads go by the request's affinity: the same key to the same backend, keys spread over all") {
  gate_fixture fx;
  for (const char* job : {"101", "102", "103"}) fx.add_backend(job, 8000);
  const auto pick = [&](const slurm::inflight_counts& counts, std::string_view key) {
    auto b = pick_backend(fx.config, fx.reg, "chat", counts, {}, key);
    REQUIRE(b);
    REQUIRE(*b);
    return (*b)->job;
  };
  const slurm::inflight_counts idle;
  CHECK(pick(idle, "") == "101");  // no key: the first in the registry
  std::set<std::string> chosen;
  for (int i = 0; i < 64; ++i) {
    const std::string key = proto::affinity_key("u" + std::to_string(i), "/v1/chat/completions",
                                                *json::parse(R"({"messages":[{"role":"user","content":"hi"}]})"));
    REQUIRE(key.size() == 16);
    const auto first = pick(idle, key);
    CHECK(pick(idle, key) == first);
    chosen.insert(first);
    // A less loaded backend still comes first; the key decides only among equals.
    slurm::inflight_counts busy;
    busy.by_job[first] = 2;
    CHECK(pick(busy, key) != first);
  }
  CHECK(chosen.size() == 3);

  // The key is that of the conversation's start, whatever follows.
  const auto key_of = [](std::string_view user, std::string_view body) {
    return proto::affinity_key(user, "/v1/chat/completions", *json::parse(body));
  };
  const auto turn1 = key_of("u", R"({"messages":[{"role":"system","content":"be brief"},{"role":"user","content":"a"}]})");
  CHECK(turn1 == key_of("u", R"({"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"a"},)"
                             R"({"role":"assistant","content":"b"},{"role":"user","content":"c"}]})"));
  CHECK(turn1 != key_of("v", R"({"messages":[{"role":"system","content":"be brief"},{"role":"user","content":"a"}]})"));
  CHECK(turn1 != key_of("u", R"({"messages":[{"role":"system","content":"be brief"},{"role":"user","content":"x"}]})"));
  CHECK(key_of("u", R"({"messages":"not a list"})").empty());
  CHECK(proto::affinity_key("u", "/v1/embeddings", *json::parse(R"({"input":"a"})")).empty());
  CHECK(proto::affinity_key("u", "/v1/completions", *json::parse(R"({"prompt":"abc"})")).size() == 16);
}
