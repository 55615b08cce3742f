// embedding.cu — token embedding lookup and its deterministic backward (CPU twin: cpp/kernels/embedding.cc).
//   embedding_forward      out (N,C) = wte[tokens[n]]
//   embedding_sort_tokens  order (N) = stable argsort of tokens (cub radix sort of (token, position))
//   embedding_backward     dwte (V,C) += sum over n with tokens[n] = v of dout[n], summed in position order
// The backward needs no float atomics: the sorted order groups equal tokens into segments, and one
// thread owns each (segment, channel) and adds the segment's rows in position order, exactly the
// order the CPU twin uses, so the result is bit-identical to it.
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>
#include <cub/device/device_radix_sort.cuh>

#include "hiermem_cuda.h"

namespace hmc {
namespace {

constexpr int kThreads = 256;

inline cudaStream_t as_stream(Stream s) { return static_cast<cudaStream_t>(s); }

// blocks for a grid-stride loop over n items (capped: the loop covers the rest)
inline unsigned grid_for(int64_t n, int threads) {
  int64_t b = (n + threads - 1) / threads;
  if (b > (1 << 20)) b = 1 << 20;
  return (unsigned)(b < 1 ? 1 : b);
}

inline size_t align256(size_t x) { return (x + 255) & ~(size_t)255; }

// out (N,C), wte (V,C): thread per output float, grid-stride over N*C (coalesced along C).
__global__ void embedding_forward_kernel(float* out, const int32_t* tokens, const float* wte, int64_t N, int64_t C) {
  const int64_t total = N * C;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t n = i / C, c = i - n * C;
    out[i] = wte[(int64_t)tokens[n] * C + c];
  }
}

// Same with float4 (C % 4 == 0, out and wte 16-byte aligned): thread per 4 floats.
__global__ void embedding_forward_kernel4(float4* out, const int32_t* tokens, const float4* wte, int64_t N, int64_t C4) {
  const int64_t total = N * C4;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t n = i / C4, c = i - n * C4;
    out[i] = wte[(int64_t)tokens[n] * C4 + c];
  }
}

__global__ void iota_kernel(int32_t* v, int64_t N) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < N; i += (int64_t)gridDim.x * blockDim.x)
    v[i] = (int32_t)i;
}

// dwte (V,C) += ...; order (N) sorted by (token, position). Block b (grid-stride over sorted index i)
// looks at order[i]: if it starts a segment of equal tokens, the block's threads own the channels
// c = threadIdx.x + k*blockDim.x of that token's row and each walks the segment in order; blocks whose
// i is not a segment start exit at once (the condition is block-uniform: no divergence at all).
__global__ void embedding_backward_kernel(float* dwte, const float* dout, const int32_t* tokens, const int32_t* order,
                                          int64_t N, int64_t C) {
  for (int64_t i = blockIdx.x; i < N; i += gridDim.x) {
    const int32_t tok = tokens[order[i]];
    if (i > 0 && tokens[order[i - 1]] == tok) continue;  // not the first of its segment
    int64_t end = i + 1;
    while (end < N && tokens[order[end]] == tok) end++;
    float* d = dwte + (int64_t)tok * C;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
      float acc = d[c];  // start from dwte and add in position order, as the CPU twin does
      for (int64_t j = i; j < end; j++) acc += dout[(int64_t)order[j] * C + c];
      d[c] = acc;
    }
  }
}

}  // namespace

int embedding_forward(float* out, const int32_t* tokens, const float* wte, int64_t N, int64_t C, Stream s) {
  if (N < 0 || C < 0) return (int)cudaErrorInvalidValue;
  if (N == 0 || C == 0) return 0;
  if (!out || !tokens || !wte) return (int)cudaErrorInvalidValue;
  const bool vec = C % 4 == 0 && (reinterpret_cast<uintptr_t>(out) % 16) == 0 && (reinterpret_cast<uintptr_t>(wte) % 16) == 0;
  if (vec) {
    const int64_t C4 = C / 4;
    embedding_forward_kernel4<<<grid_for(N * C4, kThreads), kThreads, 0, as_stream(s)>>>(
        reinterpret_cast<float4*>(out), tokens, reinterpret_cast<const float4*>(wte), N, C4);
  } else {
    embedding_forward_kernel<<<grid_for(N * C, kThreads), kThreads, 0, as_stream(s)>>>(out, tokens, wte, N, C);
  }
  return (int)cudaGetLastError();
}

// cub's own temporary storage for N items (0 if the query fails, e.g. no device).
static size_t cub_sort_bytes(int64_t N) {
  size_t bytes = 0;
  cudaError_t e = cub::DeviceRadixSort::SortPairs(nullptr, bytes, (const int32_t*)nullptr, (int32_t*)nullptr,
                                                  (const int32_t*)nullptr, (int32_t*)nullptr, (int)N);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return bytes;
}

// scratch: [sorted keys (N int32)] [positions 0..N-1 (N int32)] [cub temp], each 256-byte aligned.
size_t embedding_sort_scratch_bytes(int64_t N) {
  if (N <= 0 || N > INT_MAX) return 0;
  const size_t cub_bytes = cub_sort_bytes(N);
  if (cub_bytes == 0) return 0;
  return 2 * align256((size_t)N * sizeof(int32_t)) + align256(cub_bytes);
}

int embedding_sort_tokens(int32_t* order, const int32_t* tokens, int64_t N, void* scratch, size_t scratch_bytes,
                          Stream s) {
  if (N < 0 || N > INT_MAX) return (int)cudaErrorInvalidValue;
  if (N == 0) return 0;
  if (!order || !tokens || !scratch) return (int)cudaErrorInvalidValue;
  size_t cub_bytes = cub_sort_bytes(N);
  const size_t a = align256((size_t)N * sizeof(int32_t));
  if (cub_bytes == 0 || scratch_bytes < 2 * a + cub_bytes) return (int)cudaErrorInvalidValue;
  char* base = static_cast<char*>(scratch);
  int32_t* keys_out = reinterpret_cast<int32_t*>(base);
  int32_t* positions = reinterpret_cast<int32_t*>(base + a);
  void* temp = base + 2 * a;
  iota_kernel<<<grid_for(N, kThreads), kThreads, 0, as_stream(s)>>>(positions, N);
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return (int)e;
  // LSD radix sort is stable: equal tokens keep their (increasing) position order.
  e = cub::DeviceRadixSort::SortPairs(temp, cub_bytes, tokens, keys_out, positions, order, (int)N, 0,
                                      (int)(8 * sizeof(int32_t)), as_stream(s));
  if (e != cudaSuccess) return (int)e;
  return (int)cudaGetLastError();
}

int embedding_backward(float* dwte, const float* dout, const int32_t* tokens, const int32_t* order, int64_t N,
                       int64_t C, Stream s) {
  if (N < 0 || C < 0) return (int)cudaErrorInvalidValue;
  if (N == 0 || C == 0) return 0;
  if (!dwte || !dout || !tokens || !order) return (int)cudaErrorInvalidValue;
  // one block per sorted index (grid-stride beyond 2^20); threads loop over channels if C > blockDim
  const int threads = C >= 256 ? 256 : C > 64 ? 128 : 64;
  const unsigned grid = (unsigned)(N < (1 << 20) ? N : (1 << 20));
  embedding_backward_kernel<<<grid, threads, 0, as_stream(s)>>>(dwte, dout, tokens, order, N, C);
  return (int)cudaGetLastError();
}

}  // namespace hmc
