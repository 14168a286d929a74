// The transport interface's shared code: request encoding, the stream state and the blocking
// calls built on start().
#include "chatai/tunnel/transport.hpp"

#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <future>

#include "chatai/core/json.hpp"
#include "chatai/core/log.hpp"
#include "stream_state.hpp"

namespace chatai::tunnel {

result<std::string> transport::call(verb v, std::chrono::milliseconds timeout) {
  auto answer = std::make_shared<std::string>();
  auto done = std::make_shared<std::promise<chatai::status>>();
  auto finished = done->get_future();
  request_options options;
  options.first_byte_timeout = timeout;
  options.idle_timeout = timeout;
  auto handle = start(
      v, {},
      {[answer](std::string_view bytes) { answer->append(bytes); },
       [done](const chatai::status& outcome) { done->set_value(outcome); }},
      options);
  // The transport enforces the deadlines; the margin covers a stalled I/O thread.
  if (finished.wait_for(timeout * 2 + std::chrono::seconds(1)) != std::future_status::ready) {
    handle->cancel();
    return error(errc::timeout, std::string(proto::command_name(v)) + ": no answer in time");
  }
  auto outcome = finished.get();
  if (!outcome) return std::move(outcome).err();
  return std::move(*answer);
}

result<std::string> transport::status(std::chrono::milliseconds timeout) { return call(verb::status, timeout); }

chatai::status transport::keep_alive(std::chrono::milliseconds timeout) {
  auto answer = call(verb::keep_alive, timeout);
  if (!answer) return std::move(answer).err();
  if (*answer != "OK\n") return error(errc::parse_error, "keep-alive: unexpected answer from the gate");
  return ok_status();
}

namespace detail {

result<std::shared_ptr<waker>> waker::create() {
  int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0) return error(errc::io_error, std::string("eventfd: ") + std::strerror(errno));
  return std::shared_ptr<waker>(new waker(unique_fd(fd)));
}

void waker::wake() noexcept {
  const std::uint64_t one = 1;
  [[maybe_unused]] auto n = ::write(fd_.get(), &one, sizeof one);
}

void waker::drain() noexcept {
  std::uint64_t count;
  [[maybe_unused]] auto n = ::read(fd_.get(), &count, sizeof count);
}

stream_state::stream_state(verb v, std::string input, stream_callbacks callbacks, request_options options,
                           std::shared_ptr<waker> wake)
    : verb_(v),
      input_(std::move(input)),
      callbacks_(std::move(callbacks)),
      options_(std::move(options)),
      waker_(std::move(wake)),
      started_(clock::now()),
      last_data_(started_) {}

void stream_state::watch_cancellation() {
  std::weak_ptr<stream_state> self = shared_from_this();
  options_.cancel.on_cancel([self] {
    if (auto s = self.lock()) s->cancel();
  });
}

void stream_state::consumed(std::size_t bytes) {
  consumed_.fetch_add(bytes);
  waker_->wake();
}

void stream_state::cancel() {
  if (!cancelled_.exchange(true)) waker_->wake();
}

bool stream_state::may_read() const noexcept {
  return options_.window == 0 || delivered_ < consumed_.load() + options_.window;
}

clock::time_point stream_state::deadline() const noexcept {
  return data_seen_ ? last_data_ + options_.idle_timeout : started_ + options_.first_byte_timeout;
}

error stream_state::timeout_error() const {
  return data_seen_ ? error(errc::timeout, "the gate's answer stalled for longer than the idle timeout")
                    : error(errc::timeout, "no answer from the gate before the first-byte timeout");
}

void stream_state::deliver(std::string_view bytes) {
  if (ended_ || bytes.empty()) return;
  data_seen_ = true;
  last_data_ = clock::now();
  delivered_ += bytes.size();
  if (callbacks_.on_data) callbacks_.on_data(bytes);
}

void stream_state::finish(const status& outcome) {
  if (ended_) return;
  ended_ = true;
  if (callbacks_.on_end) callbacks_.on_end(outcome);
  callbacks_ = {};
}

void block_sigpipe() noexcept {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

std::shared_ptr<stream_state> make_keep_alive_request(std::chrono::milliseconds timeout, std::mutex& mutex,
                                                      transport_health& health, std::shared_ptr<waker> wake) {
  auto answer = std::make_shared<std::string>();
  request_options o;
  o.first_byte_timeout = timeout;
  o.idle_timeout = timeout;
  return std::make_shared<stream_state>(
      verb::keep_alive, std::string(),
      stream_callbacks{[answer](std::string_view b) { answer->append(b); },
                       [&mutex, &health, answer](const chatai::status& outcome) {
                         std::lock_guard lock(mutex);
                         health.alive = outcome.ok() && *answer == "OK\n";
                         if (health.alive)
                           health.last_keep_alive = std::chrono::steady_clock::now();
                         else
                           health.last_error = outcome.ok() ? "keep-alive: unexpected answer" : outcome.err().message();
                       }},
      o, std::move(wake));
}

std::thread start_io_thread(std::string_view what, std::function<void()> loop) {
  return std::thread([what = std::string(what), loop = std::move(loop)] {
    block_sigpipe();
    try {
      loop();
    } catch (const std::exception& e) {
      log::error(what, {{"error", e.what()}});
    }
  });
}

status gate_outcome(verb v, int exit_status, std::string_view stderr_text) {
  if (exit_status == proto::exit_ok) return ok_status();
  std::string message = "the gate (" + std::string(proto::command_name(v)) + ") exited with status " + std::to_string(exit_status);
  while (!stderr_text.empty() && (stderr_text.back() == '\n' || stderr_text.back() == '\r')) stderr_text.remove_suffix(1);
  if (!stderr_text.empty()) message += ": " + std::string(stderr_text);
  return error(exit_status == proto::exit_usage ? errc::invalid_argument : errc::unavailable, std::move(message));
}

}  // namespace detail

}  // namespace chatai::tunnel
