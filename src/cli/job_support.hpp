// What the programs that run inside a scheduler job share (chatai serve, chatai proxy): the
// shutdown signals that drain them, and the endpoint file through which the scheduler finds them.
#pragma once

#include <signal.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "chatai/core/status.hpp"

namespace chatai::cli {

// SIGTERM, SIGINT and SIGUSR1 (Slurm's --signal=B:USR1@lead). Block them in the main thread
// before any other thread starts, so that only watch_shutdown_signals takes them.
sigset_t shutdown_signals();

// Takes the shutdown signals synchronously until `done`: the first one calls `drain`, a second
// SIGTERM or SIGINT exits the process at once. `program` names the log lines ("serve").
void watch_shutdown_signals(const std::function<void()>& drain, const std::atomic<bool>& done, std::string_view program);

// Writes {"host":...,"port":...} to `path` whole or not at all (mode 0600). A server bound to
// every address names its node, which is how other nodes reach it.
status write_endpoint_file(const std::string& path, std::string host, std::uint16_t port);

}  // namespace chatai::cli
