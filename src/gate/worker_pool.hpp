// The gate's pool of worker threads (internal).
#pragma once

#include <pthread.h>
#include <signal.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include "internal.hpp"

namespace chatai::gate::detail {

// Threads for the gate's jobs (a session's requests, requests' backend calls): one is started
// when a job finds none idle, and an idle one waits for the next job for a while before it
// ends, so that a busy session starts no thread per request. SIGPIPE stays blocked on them.
// Thread safety: run() and stop() from any thread.
class worker_pool {
 public:
  // Runs `job` on an idle worker or a new one; throws std::system_error when none can start.
  static void run(const std::shared_ptr<worker_pool>& pool, std::function<void()> job) {
    {
      std::lock_guard lock(pool->mutex_);
      pool->jobs_.push_back(std::move(job));
      if (pool->waiting_ >= pool->jobs_.size()) {
        pool->cv_.notify_one();
        return;
      }
    }
    try {
      std::thread([pool] { pool->work(); }).detach();
    } catch (...) {
      std::lock_guard lock(pool->mutex_);
      pool->jobs_.pop_back();
      throw;
    }
  }

  // Idle workers end now; busy ones when their request has.
  void stop() {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    cv_.notify_all();
  }

 private:
  void work() {
    sigset_t pipe_only;
    sigemptyset(&pipe_only);
    sigaddset(&pipe_only, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_only, nullptr);
    sigpipe_blocked_here = true;
    std::unique_lock lock(mutex_);
    for (;;) {
      if (!jobs_.empty()) {
        auto job = std::move(jobs_.front());
        jobs_.pop_front();
        lock.unlock();
        job();
        job = nullptr;  // what the job holds (a request's files and descriptors) goes outside the lock
        lock.lock();
        continue;
      }
      if (stopping_) return;
      ++waiting_;
      const bool woken = cv_.wait_for(lock, idle_linger, [&] { return !jobs_.empty() || stopping_; });
      --waiting_;
      if (!woken) return;
    }
  }

  static constexpr auto idle_linger = std::chrono::seconds(10);
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  std::size_t waiting_ = 0;  // workers waiting for a job
  bool stopping_ = false;
};

}  // namespace chatai::gate::detail
