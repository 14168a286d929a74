// Shutdown signals and the endpoint file of the programs that run inside a scheduler job.
#include "job_support.hpp"

#include <limits.h>
#include <unistd.h>

#include <cstdlib>
#include <ctime>
#include <filesystem>

#include "chatai/core/json.hpp"
#include "chatai/core/log.hpp"
#include "chatai/slurm/registry.hpp"

namespace chatai::cli {

sigset_t shutdown_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGUSR1);
  return set;
}

void watch_shutdown_signals(const std::function<void()>& drain, const std::atomic<bool>& done, std::string_view program) {
  const sigset_t set = shutdown_signals();
  const std::string prefix(program);
  bool draining = false;
  while (!done.load()) {
    timespec wait{0, 200'000'000};
    const int sig = sigtimedwait(&set, nullptr, &wait);
    if (sig < 0) continue;
    if (!draining) {
      draining = true;
      log::info(prefix + ": signal received, draining",
                {{"signal", sig == SIGUSR1 ? "SIGUSR1" : sig == SIGINT ? "SIGINT" : "SIGTERM"}});
      drain();
    } else if (sig != SIGUSR1) {
      log::warn(prefix + ": second signal, exiting now");
      std::_Exit(128 + sig);
    }
  }
}

status write_endpoint_file(const std::string& path, std::string host, std::uint16_t port) {
  if (host == "0.0.0.0" || host == "::") {
    char name[HOST_NAME_MAX + 1] = {};
    if (::gethostname(name, sizeof name - 1) != 0) return error(errc::io_error, "gethostname failed");
    host = name;
  }
  std::string doc = "{\"host\":";
  json::append_quoted(doc, host);
  doc += ",\"port\":" + std::to_string(port) + "}\n";
  return slurm::replace_file_atomically(std::filesystem::absolute(path), doc);
}

}  // namespace chatai::cli
