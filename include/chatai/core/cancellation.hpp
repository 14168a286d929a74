// A one-shot cancellation signal: a source fires it once, any number of tokens observe it.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

namespace chatai {

namespace detail {
struct cancellation_state {
  std::atomic<bool> cancelled{false};
  std::mutex mutex;  // guards callbacks and the transition of `cancelled`
  std::vector<std::function<void()>> callbacks;
};
}  // namespace detail

// The observing side. A default-constructed token is never cancelled.
// Thread safety: all members may be called from any thread.
class cancellation {
 public:
  cancellation() = default;

  bool is_cancelled() const noexcept;

  // Runs `fn` once when the signal fires, on the thread that fires it; at once, on this thread,
  // when it has fired already. Callbacks must not block: they run under no lock but in the
  // firing thread, which may be an I/O thread.
  void on_cancel(std::function<void()> fn) const;

 private:
  friend class cancellation_source;
  explicit cancellation(std::shared_ptr<detail::cancellation_state> state) : state_(std::move(state)) {}

  std::shared_ptr<detail::cancellation_state> state_;
};

// The firing side.
// Thread safety: all members may be called from any thread; cancel() is idempotent.
class cancellation_source {
 public:
  cancellation_source() : state_(std::make_shared<detail::cancellation_state>()) {}

  cancellation token() const { return cancellation(state_); }
  bool is_cancelled() const noexcept { return state_->cancelled.load(); }
  // Fires the signal: runs the registered callbacks once. Later calls do nothing.
  void cancel();

 private:
  std::shared_ptr<detail::cancellation_state> state_;
};

}  // namespace chatai
