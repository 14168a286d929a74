// Internal pieces shared by the transports: the wake-up descriptor of an I/O thread and the
// state of one request, which is also the caller's stream handle.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include "chatai/core/status.hpp"
#include "chatai/core/unique_fd.hpp"
#include "chatai/tunnel/transport.hpp"

namespace chatai::tunnel::detail {

using clock = std::chrono::steady_clock;

// An eventfd that wakes an I/O thread out of poll.
// Thread safety: wake() may be called from any thread; drain() and fd() by the I/O thread.
class waker {
 public:
  static result<std::shared_ptr<waker>> create();
  int fd() const noexcept { return fd_.get(); }
  void wake() noexcept;
  void drain() noexcept;

 private:
  explicit waker(unique_fd fd) : fd_(std::move(fd)) {}
  unique_fd fd_;
};

// One request. The caller holds it as a stream; the I/O thread owns everything else.
// Thread safety: consumed() and cancel() from any thread; the rest on the I/O thread only.
class stream_state final : public stream, public std::enable_shared_from_this<stream_state> {
 public:
  stream_state(verb v, std::string input, stream_callbacks callbacks, request_options options,
               std::shared_ptr<waker> wake);

  void consumed(std::size_t bytes) override;
  void cancel() override;

  // Hooks the caller's cancellation token to cancel(); called once, after construction.
  void watch_cancellation();

  bool cancel_requested() const noexcept { return cancelled_.load(); }
  bool ended() const noexcept { return ended_; }
  // Whether the window lets the I/O thread read more of the answer.
  bool may_read() const noexcept;
  // The first-byte or idle deadline, whichever applies now.
  clock::time_point deadline() const noexcept;
  // A timeout error once the deadline has passed.
  bool expired(clock::time_point now) const noexcept { return now >= deadline(); }
  error timeout_error() const;

  std::size_t consumed_bytes() const noexcept { return consumed_.load(); }
  std::size_t delivered_bytes() const noexcept { return delivered_; }
  std::size_t window() const noexcept { return options_.window; }

  void deliver(std::string_view bytes);
  void finish(const status& outcome);

  const verb verb_;
  const std::string input_;
  std::size_t written_ = 0;      // bytes of input_ sent
  bool input_closed_ = false;    // end-of-file sent (verbs other than request)
  bool data_seen_ = false;
  std::string stderr_;           // the first bytes the gate wrote on stderr
  int session_ = -1;             // the SSH session the request runs on, -1 when none

 private:
  stream_callbacks callbacks_;
  request_options options_;
  std::shared_ptr<waker> waker_;
  clock::time_point started_;
  clock::time_point last_data_;
  std::atomic<bool> cancelled_{false};
  std::atomic<std::size_t> consumed_{0};
  std::size_t delivered_ = 0;
  bool ended_ = false;
};

// The outcome of a gate process that exited with `exit_status` after writing `stderr_text`.
status gate_outcome(verb v, int exit_status, std::string_view stderr_text);

// Blocks SIGPIPE on the calling thread, so that a write to a closed pipe or socket fails with
// EPIPE there instead of ending the process.
void block_sigpipe() noexcept;

// Starts a transport's I/O thread running `loop` with SIGPIPE blocked; an exception that
// escapes the loop is logged with `what` instead of ending the process.
std::thread start_io_thread(std::string_view what, std::function<void()> loop);

// The keep-alive both transports run every interval: its end records liveness (or the error)
// in `health`, under `mutex`, which must outlive the request.
std::shared_ptr<stream_state> make_keep_alive_request(std::chrono::milliseconds timeout, std::mutex& mutex,
                                                      transport_health& health, std::shared_ptr<waker> wake);

// How much of the gate's stderr a request keeps for its error message.
inline constexpr std::size_t max_stderr = 2048;

}  // namespace chatai::tunnel::detail
