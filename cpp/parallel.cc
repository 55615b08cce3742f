#include "parallel.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define HM_CPU_RELAX() _mm_pause()
#else
#define HM_CPU_RELAX() std::this_thread::yield()
#endif

namespace hm {
namespace {

thread_local bool tl_in_region = false;

// How long an idle worker (and a caller waiting for the last chunk) polls before it blocks. A
// training step issues a few hundred parallel regions separated by short serial stretches; polling
// across those gaps replaces a futex wake-up (tens of microseconds on a busy VM) per region by a
// cache-line transfer. Past the window the threads sleep, so an idle process burns no CPU.
constexpr auto kSpinWorker = std::chrono::microseconds(300);
constexpr auto kSpinCaller = std::chrono::microseconds(2000);

template <class Pred>
bool spin_until(Pred done, std::chrono::microseconds budget) {
  if (done()) return true;
  const auto until = std::chrono::steady_clock::now() + budget;
  for (;;) {
    for (int i = 0; i < 64; i++) {
      HM_CPU_RELAX();
      if (done()) return true;
    }
    if (std::chrono::steady_clock::now() >= until) return false;
  }
}

class Pool {
 public:
  ~Pool() { resize(1); }

  void resize(int n) {
    std::lock_guard<std::mutex> submit(submit_mu_);
    stop_workers();
    size_ = std::max(1, n);
    stopping_.store(false);
    // New workers must ignore jobs that finished before they started: start them at the
    // current job word.
    const uint64_t job = job_.load();
    for (int i = 1; i < size_; i++) workers_.emplace_back([this, i, job] { worker_loop(i, job); });
  }
  int size() const { return size_; }

  // Runs task(i) for i in [0, nchunks); chunk 0 on the caller. nchunks <= size().
  void run(int64_t nchunks, const std::function<void(int64_t)>& task) {
    std::lock_guard<std::mutex> submit(submit_mu_);  // one job at a time across caller threads
    task_ = &task;
    pending_.store(nchunks - 1, std::memory_order_relaxed);
    // The job word carries the chunk count, so a worker that takes no chunk never reads task_
    // (which the next job may be rewriting); workers that do take one are waited for.
    const uint64_t job = ((job_.load(std::memory_order_relaxed) >> kCountBits) + 1) << kCountBits | (uint64_t)nchunks;
    job_.store(job, std::memory_order_seq_cst);
    if (sleepers_.load(std::memory_order_seq_cst) > 0) {
      std::lock_guard<std::mutex> lk(mu_);
      cv_.notify_all();
    }
    tl_in_region = true;
    task(0);
    tl_in_region = false;
    auto all_done = [this] { return pending_.load(std::memory_order_seq_cst) == 0; };
    if (!spin_until(all_done, kSpinCaller)) {
      std::unique_lock<std::mutex> lk(mu_);
      caller_waiting_.store(true, std::memory_order_seq_cst);
      done_cv_.wait(lk, all_done);
      caller_waiting_.store(false, std::memory_order_relaxed);
    }
    task_ = nullptr;
  }

 private:
  static constexpr int kCountBits = 16;  // nchunks <= 256 threads

  void worker_loop(int index, uint64_t seen) {
    tl_in_region = true;
    for (;;) {
      uint64_t job = seen;
      auto changed = [&] {
        job = job_.load(std::memory_order_seq_cst);
        return job != seen || stopping_.load(std::memory_order_relaxed);
      };
      if (!spin_until(changed, kSpinWorker)) {
        std::unique_lock<std::mutex> lk(mu_);
        sleepers_.fetch_add(1, std::memory_order_seq_cst);
        cv_.wait(lk, changed);
        sleepers_.fetch_sub(1, std::memory_order_relaxed);
      }
      if (stopping_.load(std::memory_order_acquire)) return;
      seen = job;
      const int64_t nchunks = (int64_t)(job & ((1u << kCountBits) - 1));
      if (index >= nchunks) continue;
      (*task_)(index);
      if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1 && caller_waiting_.load(std::memory_order_seq_cst)) {
        std::lock_guard<std::mutex> lk(mu_);
        done_cv_.notify_one();
      }
    }
  }
  void stop_workers() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stopping_.store(true, std::memory_order_seq_cst);
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
  }

  std::mutex submit_mu_, mu_;
  std::condition_variable cv_, done_cv_;
  std::vector<std::thread> workers_;
  const std::function<void(int64_t)>* task_ = nullptr;
  std::atomic<uint64_t> job_{0};  // (job number << kCountBits) | nchunks
  std::atomic<int64_t> pending_{0};
  std::atomic<int> sleepers_{0};
  std::atomic<bool> caller_waiting_{false};
  std::atomic<bool> stopping_{false};
  int size_ = 1;
};

Pool& pool() {
  static Pool p;
  return p;
}
std::atomic<int> g_threads{0};

}  // namespace

void set_num_threads(int n) {
  n = std::max(1, std::min(n, 256));
  g_threads = n;
  pool().resize(n);
}

int num_threads() {
  if (g_threads == 0) set_num_threads((int)std::max(1u, std::thread::hardware_concurrency()));
  return g_threads;
}

bool in_parallel_region() { return tl_in_region; }

int64_t parallel_chunks(int64_t n, int64_t grain) {
  if (n <= 0) return 0;
  grain = std::max<int64_t>(1, grain);
  int64_t units = (n + grain - 1) / grain;
  return std::min<int64_t>(units, num_threads());
}

void parallel_chunk_range(int64_t n, int64_t grain, int64_t nchunks, int64_t i, int64_t* begin, int64_t* end) {
  grain = std::max<int64_t>(1, grain);
  int64_t units = (n + grain - 1) / grain;
  int64_t per = units / nchunks, extra = units % nchunks;
  int64_t u0 = i * per + std::min(i, extra);
  int64_t u1 = u0 + per + (i < extra ? 1 : 0);
  *begin = std::min(n, u0 * grain);
  *end = std::min(n, u1 * grain);
}

void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain) {
  if (n <= 0) return;
  int64_t nchunks = parallel_chunks(n, grain);
  if (nchunks <= 1 || tl_in_region) {
    fn(0, n);
    return;
  }
  std::function<void(int64_t)> task = [&](int64_t i) {
    int64_t b, e;
    parallel_chunk_range(n, grain, nchunks, i, &b, &e);
    if (b < e) fn(b, e);
  };
  pool().run(nchunks, task);
}

}  // namespace hm
