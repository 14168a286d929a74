// Running a program with a fixed argv (never a shell): stdin from memory, stdout and stderr
// captured, a deadline after which the child is killed.
#pragma once

#include <chrono>
#include <map>
#include <string>
#include <vector>

#include "chatai/core/status.hpp"

namespace chatai {

struct subprocess_options {
  std::vector<std::string> argv;               // argv[0] is the program (a path, or a name looked up in PATH)
  std::string stdin_data;                      // written to the child's stdin, then closed
  std::map<std::string, std::string> env_set;  // added to (or replacing in) the inherited environment
  // false: the child's environment is env_set alone, nothing inherited (for a program that
  // must not see what this process was given, such as the gate's scheduler tick).
  bool inherit_environment = true;
  std::chrono::milliseconds timeout{30000};    // the child is killed (SIGKILL) after this
  std::size_t max_output = 16 << 20;           // bytes kept of each of stdout and stderr
};

struct subprocess_result {
  int exit_code = -1;  // the exit status, or -1 if killed by a signal
  int signal = 0;      // the signal that ended the child, 0 if it exited
  bool timed_out = false;
  std::string out;
  std::string err;
};

// Runs the program to completion. An error only when it could not be started; a program that
// fails is a result with its exit code. Thread safety: safe to call from any thread.
result<subprocess_result> run_subprocess(const subprocess_options& options);

}  // namespace chatai
