// parallel.h — a tiny fixed-size thread pool with static chunking.
// Why our own pool: static, contiguous chunks make every reduction order depend only on the
// thread count (bit-identical reruns), and one pool serves every kernel, the GEMM included
// (kernels/gemm.h), so threads are never oversubscribed.
#pragma once
#include <cstdint>
#include <functional>

namespace hm {

void set_num_threads(int n);  // n >= 1; takes effect for the next parallel_for
int num_threads();

// Runs fn(begin, end) over [0, n) split into at most num_threads() contiguous chunks whose
// boundaries are multiples of `grain` (except the last). Chunk i always covers the same range for
// a given (n, grain, num_threads), so results are deterministic. Nested calls run serially.
void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain = 1);

// Number of chunks parallel_for would use, and the range of chunk i (for per-chunk partial sums).
int64_t parallel_chunks(int64_t n, int64_t grain = 1);
void parallel_chunk_range(int64_t n, int64_t grain, int64_t nchunks, int64_t i, int64_t* begin, int64_t* end);

bool in_parallel_region();

}  // namespace hm
