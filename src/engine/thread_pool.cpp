// The thread pool: workers wait on a job generation counter, polling with yields first, then
// sleeping on the atomic (a futex on Linux).
#include "chatai/engine/thread_pool.hpp"

#include <algorithm>
#include <chrono>

#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <climits>
#endif

namespace chatai::engine {
namespace {

// A waiting thread first polls, yielding its core between polls: on an idle machine a yield
// returns at once and the wait ends within microseconds of the change, and on a busy one the
// core goes to whoever is runnable, often the very thread being waited for (spinning in
// place there starves it, and makes decoding several times slower). After this long without
// a change it sleeps on the futex.
constexpr auto poll_time = std::chrono::microseconds(100);

// Sleeps while *word == old (or returns at once if it no longer is).
void futex_wait(const std::atomic<std::uint32_t>& word, std::uint32_t old) noexcept {
#if defined(__linux__)
  ::syscall(SYS_futex, reinterpret_cast<const std::uint32_t*>(&word), FUTEX_WAIT_PRIVATE, old, nullptr, nullptr, 0);
#else
  (void)word;
  (void)old;
  std::this_thread::yield();
#endif
}

void futex_wake_all(std::atomic<std::uint32_t>& word) noexcept {
#if defined(__linux__)
  ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr, nullptr, 0);
#else
  (void)word;
#endif
}

}  // namespace

thread_pool::thread_pool(int n_threads) : n_threads_(std::max(1, n_threads)) {
  workers_.reserve(static_cast<std::size_t>(n_threads_ - 1));
  for (int i = 1; i < n_threads_; ++i) workers_.emplace_back([this, i] { worker_main(i); });
}

thread_pool::~thread_pool() {
  stopping_.store(true, std::memory_order_release);
  advance(job_generation_);
  for (auto& t : workers_) t.join();
}

// Sleepers announce themselves before their last check and wakers look after their change
// (both sequentially consistent), so a waker either sees the sleeper or the sleeper sees
// the change: no wake-up is lost, and none is paid for while everyone polls.
void thread_pool::wait_while_equal(const std::atomic<std::uint32_t>& value, std::uint32_t old) noexcept {
  const auto deadline = std::chrono::steady_clock::now() + poll_time;
  while (value.load(std::memory_order_acquire) == old) {
    if (std::chrono::steady_clock::now() >= deadline) {
      sleepers_.fetch_add(1, std::memory_order_seq_cst);
      while (value.load(std::memory_order_seq_cst) == old) futex_wait(value, old);
      sleepers_.fetch_sub(1, std::memory_order_seq_cst);
      return;
    }
    std::this_thread::yield();
  }
}

void thread_pool::advance(std::atomic<std::uint32_t>& value) noexcept {
  value.fetch_add(1, std::memory_order_seq_cst);
  if (sleepers_.load(std::memory_order_seq_cst) > 0) futex_wake_all(value);
}

void thread_pool::execute(int index) noexcept {
  try {
    (*job_)(index, n_threads_);
  } catch (...) {
    std::lock_guard lock(error_mutex_);
    if (!error_) error_ = std::current_exception();
  }
}

void thread_pool::worker_main(int index) {
  // Generation 0 is the state before the first job. Reading the counter here instead would
  // miss a job that run() posted before this thread got going.
  std::uint32_t seen = 0;
  for (;;) {
    wait_while_equal(job_generation_, seen);
    seen = job_generation_.load(std::memory_order_acquire);
    if (stopping_.load(std::memory_order_acquire)) return;
    execute(index);
    if (job_pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      advance(job_done_);
    }
  }
}

void thread_pool::run(const std::function<void(int, int)>& job) {
  if (n_threads_ == 1) {
    job(0, 1);
    return;
  }
  job_ = &job;
  job_pending_.store(n_threads_ - 1, std::memory_order_relaxed);
  const std::uint32_t done = job_done_.load(std::memory_order_acquire);
  advance(job_generation_);
  execute(0);
  wait_while_equal(job_done_, done);
  job_ = nullptr;
  if (error_) {
    std::exception_ptr e;
    std::swap(e, error_);
    std::rethrow_exception(e);
  }
}

void thread_pool::barrier() noexcept {
  if (n_threads_ == 1) return;
  const std::uint32_t generation = barrier_generation_.load(std::memory_order_acquire);
  if (barrier_arrived_.fetch_add(1, std::memory_order_acq_rel) == n_threads_ - 1) {
    barrier_arrived_.store(0, std::memory_order_relaxed);
    advance(barrier_generation_);
    return;
  }
  wait_while_equal(barrier_generation_, generation);
}

}  // namespace chatai::engine
