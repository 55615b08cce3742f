#include "parallel.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

namespace hm {
namespace {

thread_local bool tl_in_region = false;

class Pool {
 public:
  ~Pool() { resize(1); }

  void resize(int n) {
    std::lock_guard<std::mutex> submit(submit_mu_);
    stop_workers();
    size_ = std::max(1, n);
    stopping_ = false;
    // New workers must ignore jobs that finished before they started: start them at the
    // current generation.
    const uint64_t gen = generation_;
    for (int i = 1; i < size_; i++) workers_.emplace_back([this, i, gen] { worker_loop(i, gen); });
  }
  int size() const { return size_; }

  // Runs task(i) for i in [0, nchunks); chunk 0 on the caller.
  void run(int64_t nchunks, const std::function<void(int64_t)>& task) {
    std::lock_guard<std::mutex> submit(submit_mu_);  // one job at a time across caller threads
    {
      std::lock_guard<std::mutex> lk(mu_);
      task_ = &task;
      nchunks_ = nchunks;
      pending_ = nchunks - 1;
      generation_++;
    }
    cv_.notify_all();
    tl_in_region = true;
    task(0);
    tl_in_region = false;
    std::unique_lock<std::mutex> lk(mu_);
    done_cv_.wait(lk, [this] { return pending_ == 0; });
    task_ = nullptr;
  }

 private:
  void worker_loop(int index, uint64_t seen) {
    tl_in_region = true;
    for (;;) {
      const std::function<void(int64_t)>* task;
      int64_t nchunks;
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return stopping_ || generation_ != seen; });
        if (stopping_) return;
        seen = generation_;
        task = task_;
        nchunks = nchunks_;
      }
      if (task == nullptr || index >= nchunks) continue;
      (*task)(index);
      {
        std::lock_guard<std::mutex> lk(mu_);
        if (--pending_ == 0) done_cv_.notify_one();
      }
    }
  }
  void stop_workers() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
  }

  std::mutex submit_mu_, mu_;
  std::condition_variable cv_, done_cv_;
  std::vector<std::thread> workers_;
  const std::function<void(int64_t)>* task_ = nullptr;
  int64_t nchunks_ = 0, pending_ = 0;
  uint64_t generation_ = 0;
  bool stopping_ = false;
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
