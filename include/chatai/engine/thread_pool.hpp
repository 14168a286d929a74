// A fixed team of threads that runs one parallel job at a time, with a barrier between the
// phases of a job: the CPU backend's forward pass is one job per step.
#pragma once

#include <atomic>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace chatai::engine {

// Thread safety: run() may be called from one thread at a time (the pool's owner); barrier()
// only from inside a job, by every thread of the team.
class thread_pool {
 public:
  // A team of n_threads (at least 1) including the thread that calls run(): n_threads - 1
  // workers are started here. Waiting threads poll, yielding the core, then sleep on a futex.
  explicit thread_pool(int n_threads);
  ~thread_pool();
  thread_pool(const thread_pool&) = delete;
  thread_pool& operator=(const thread_pool&) = delete;

  int size() const noexcept { return n_threads_; }

  // Runs job(thread_index, n_threads) on every thread of the team, the caller being thread
  // 0, and returns when all have finished. An exception thrown by a job is rethrown here
  // (the first one, after every thread has returned); a job that throws must not leave the
  // others waiting at a barrier.
  void run(const std::function<void(int thread_index, int n_threads)>& job);

  // Inside a job: returns once every thread of the team has reached it.
  void barrier() noexcept;

 private:
  void worker_main(int index);
  void execute(int index) noexcept;
  void wait_while_equal(const std::atomic<std::uint32_t>& value, std::uint32_t old) noexcept;
  void advance(std::atomic<std::uint32_t>& value) noexcept;  // increments and wakes sleepers

  int n_threads_;
  std::vector<std::thread> workers_;
  const std::function<void(int, int)>* job_ = nullptr;
  std::atomic<std::uint32_t> job_generation_{0};
  std::atomic<int> job_pending_{0};
  std::atomic<std::uint32_t> job_done_{0};
  std::atomic<int> barrier_arrived_{0};
  std::atomic<std::uint32_t> barrier_generation_{0};
  std::atomic<bool> stopping_{false};
  std::atomic<int> sleepers_{0};
  std::mutex error_mutex_;
  std::exception_ptr error_;
};

}  // namespace chatai::engine
