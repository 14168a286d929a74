// The local transport: runs chatai-gate as a child process per request, with
// SSH_ORIGINAL_COMMAND set as sshd would set it (for `chatai up` and tests).
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "chatai/core/status.hpp"
#include "chatai/tunnel/transport.hpp"

namespace chatai::tunnel {

struct local_options {
  std::string gate_program;  // the chatai-gate binary
  std::string gate_config;   // passed as --config
  int max_running = 64;      // children at once; more requests wait in the queue
  int max_queued = 4096;
  std::chrono::milliseconds keep_alive_interval{5000};  // 0: no keep-alive
  std::chrono::milliseconds keep_alive_timeout{5000};
};

// Thread model: one I/O thread polls the children's pipes and a wake-up descriptor; requests
// are queued from any thread. A cancelled request's stdin and stdout are closed at once (the
// gate takes that as its client leaving) and the child is killed if it has not exited a second
// later. Stream callbacks run on the I/O thread.
// Thread safety: all members may be called from any thread (see transport).
class local_transport final : public transport {
 public:
  static result<std::unique_ptr<local_transport>> create(local_options options);
  ~local_transport() override;

  std::shared_ptr<stream> start(verb v, std::string input, stream_callbacks callbacks,
                                request_options options) override;
  transport_health health() const override;

  struct impl;

 private:
  explicit local_transport(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

}  // namespace chatai::tunnel
