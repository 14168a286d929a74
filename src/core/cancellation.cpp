// The cancellation signal shared by a source and its tokens.
#include "chatai/core/cancellation.hpp"

namespace chatai {

bool cancellation::is_cancelled() const noexcept { return state_ && state_->cancelled.load(); }

void cancellation::on_cancel(std::function<void()> fn) const {
  if (!state_) return;
  {
    std::lock_guard lock(state_->mutex);
    if (!state_->cancelled.load()) {
      state_->callbacks.push_back(std::move(fn));
      return;
    }
  }
  fn();
}

void cancellation_source::cancel() {
  std::vector<std::function<void()>> callbacks;
  {
    std::lock_guard lock(state_->mutex);
    if (state_->cancelled.load()) return;
    state_->cancelled.store(true);
    callbacks.swap(state_->callbacks);
  }
  for (auto& fn : callbacks) fn();
}

}  // namespace chatai
