// Tests of run_subprocess: argv without a shell, stdin, output capture, exit codes, deadlines.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>

#include "chatai/core/subprocess.hpp"

using namespace chatai;

TEST_CASE("a program's output and exit code are captured") {
  subprocess_options o;
  o.argv = {"sh", "-c", "echo out; echo err >&2; exit 3"};
  auto r = run_subprocess(o);
  REQUIRE(r);
  CHECK(r->exit_code == 3);
  CHECK(r->out == "out\n");
  CHECK(r->err == "err\n");
  CHECK_FALSE(r->timed_out);
}

TEST_CASE("arguments are passed as they are, never through a shell") {
  subprocess_options o;
  o.argv = {"printf", "%s|", "a b", "$(id)", "; rm -rf /"};
  auto r = run_subprocess(o);
  REQUIRE(r);
  CHECK(r->out == "a b|$(id)|; rm -rf /|");
}

TEST_CASE("stdin is delivered, environment is set") {
  subprocess_options o;
  o.argv = {"sh", "-c", "cat; printf %s \"$CHATAI_TEST_VAR\""};
  o.stdin_data = std::string(200000, 'x');
  o.env_set = {{"CHATAI_TEST_VAR", "set"}};
  auto r = run_subprocess(o);
  REQUIRE(r);
  CHECK(r->out.size() == 200003);
  CHECK(r->out.substr(200000) == "set");
}

TEST_CASE("without inheriting, the child's environment is env_set alone") {
  ::setenv("CHATAI_TEST_PARENT_ONLY", "leaked", 1);
  subprocess_options o;
  o.argv = {"/usr/bin/env"};
  o.env_set = {{"B", "2"}, {"A", "1"}};
  o.inherit_environment = false;
  auto alone = run_subprocess(o);
  REQUIRE(alone);
  CHECK(alone->out == "A=1\nB=2\n");
  o.inherit_environment = true;
  auto merged = run_subprocess(o);
  ::unsetenv("CHATAI_TEST_PARENT_ONLY");
  REQUIRE(merged);
  CHECK(merged->out.find("CHATAI_TEST_PARENT_ONLY=leaked\n") != std::string::npos);
  CHECK(merged->out.find("A=1\n") != std::string::npos);
}

TEST_CASE("a child that ignores its stdin does not kill the caller") {
  subprocess_options o;
  o.argv = {"true"};
  o.stdin_data = std::string(1 << 20, 'x');
  auto r = run_subprocess(o);
  REQUIRE(r);
  CHECK(r->exit_code == 0);
}

TEST_CASE("the deadline kills a child that runs too long, even with its pipes closed") {
  subprocess_options o;
  o.argv = {"sleep", "30"};
  o.timeout = std::chrono::milliseconds(200);
  auto r = run_subprocess(o);
  REQUIRE(r);
  CHECK(r->timed_out);
  CHECK(r->signal == SIGKILL);

  o.argv = {"sh", "-c", "exec >/dev/null 2>&1; sleep 30"};
  auto closed = run_subprocess(o);
  REQUIRE(closed);
  CHECK(closed->timed_out);
}

TEST_CASE("a missing program is not_found") {
  subprocess_options o;
  o.argv = {"/nonexistent/program"};
  auto r = run_subprocess(o);
  REQUIRE_FALSE(r);
  CHECK(r.err().code() == errc::not_found);
}

TEST_CASE("a child inherits no descriptor but its three pipes") {
  // Opened without O_CLOEXEC, as a library or an older call site might.
  const int leaked = ::open("/dev/null", O_RDONLY);
  REQUIRE(leaked > 2);
  subprocess_options o;
  o.argv = {"sh", "-c", "ls /proc/$$/fd; true"};
  auto r = run_subprocess(o);
  ::close(leaked);
  REQUIRE(r);
  CHECK(r->exit_code == 0);
  // The shell's own descriptors are 0, 1 and 2 (ls runs as its own process).
  CHECK(r->out == "0\n1\n2\n");
}
