// chatai-gate: the ForceCommand program on the login node. `chatai-gate --config FILE` runs the
// verb that sshd passes in SSH_ORIGINAL_COMMAND; see chatai/gate/gate.hpp.
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "chatai/core/log.hpp"
#include "chatai/gate/config.hpp"
#include "chatai/gate/gate.hpp"

namespace {

int refuse(const std::string& why) {
  const std::string line = "chatai-gate: " + why + "\n";
  (void)!::write(STDERR_FILENO, line.data(), line.size());
  return chatai::gate::exit_usage;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3 || std::strcmp(argv[1], "--config") != 0) return refuse("usage: chatai-gate --config FILE");
  auto v = chatai::proto::parse_command(std::getenv("SSH_ORIGINAL_COMMAND"));
  if (!v) return refuse(v.err().message());
  auto config = chatai::gate::load_config(argv[2]);
  if (!config) return refuse(config.err().message());
  chatai::log::set_level(chatai::log::level::warn);
  ::signal(SIGPIPE, SIG_IGN);
  const int code = chatai::gate::run(*config, *v, STDIN_FILENO, STDOUT_FILENO);
  // A backend call the client walked away from may still be running on its thread: leaving
  // with _exit closes its connection now instead of waiting for it.
  ::_exit(code);
}
