// nccl_lib.cc — the dlopen'ed NCCL library (see nccl_lib.h). The entry points are declared here by
// hand (NCCL's C ABI is stable: ncclUniqueId is 128 bytes passed by value, ncclComm_t a pointer,
// enums are ints); the CUDA runtime calls of the host-buffer path likewise.
#include "nccl_lib.h"

#include <cstdio>
#include <cstring>
#include <mutex>

#include "dl_lib.h"
#include "mpi_lib.h"

namespace hmb::nccl {

namespace {

struct UniqueId {
  char internal[128];
};
using Comm = void*;
constexpr int kFloat32 = 7;  // ncclFloat32
constexpr int kSum = 0;      // ncclSum
constexpr int kAvg = 4;      // ncclAvg (NCCL >= 2.10)
constexpr int kMemcpyHostToDevice = 1, kMemcpyDeviceToHost = 2;

struct Fns {
  int (*GetVersion)(int*) = nullptr;
  const char* (*GetErrorString)(int) = nullptr;
  int (*GetUniqueId)(UniqueId*) = nullptr;
  int (*CommInitRank)(Comm*, int, UniqueId, int) = nullptr;
  int (*AllReduce)(const void*, void*, size_t, int, int, Comm, void*) = nullptr;
  int (*CommDestroy)(Comm) = nullptr;
};

struct Cudart {
  void* handle = nullptr;
  int (*Malloc)(void**, size_t) = nullptr;
  int (*Free)(void*) = nullptr;
  int (*Memcpy)(void*, const void*, size_t, int) = nullptr;
  int (*DeviceSynchronize)() = nullptr;
};

struct Lib {
  std::mutex mu;
  void* handle = nullptr;
  bool fake = false;
  std::string path;
  Fns f;
  Cudart rt;
  Comm comm = nullptr;
  int version = 0, rank = 0, size = 1;
  UniqueId id{};
};
Lib g;

void check_nccl(int rc, const char* what) {
  if (rc == 0) return;
  const char* s = g.f.GetErrorString ? g.f.GetErrorString(rc) : nullptr;
  throw_code("E_COMM", std::string(what) + " failed: " + (s ? s : "unknown error") + " (NCCL error " + std::to_string(rc) + ")");
}

void check_cuda(int rc, const char* what) {
  if (rc != 0) throw_code("E_CUDA", std::string(what) + " failed (CUDA error " + std::to_string(rc) + ")");
}

// The CUDA runtime for staging host buffers (real NCCL only), opened on first use.
void open_cudart() {
  if (g.rt.handle) return;
  for (const char* name : {"libcudart.so", "libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0"}) {
    void* h = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (!h) continue;
    Cudart rt;
    rt.handle = h;
    if (dl_sym(h, "cudaMalloc", &rt.Malloc) && dl_sym(h, "cudaFree", &rt.Free) && dl_sym(h, "cudaMemcpy", &rt.Memcpy) &&
        dl_sym(h, "cudaDeviceSynchronize", &rt.DeviceSynchronize)) {
      g.rt = rt;
      return;
    }
  }
  throw_code("E_BACKEND_UNAVAILABLE", "a host-buffer NCCL all-reduce needs the CUDA runtime (libcudart.so), which does not open here");
}

void require_comm(const char* what) {
  if (!g.handle) throw_code("E_BACKEND_UNAVAILABLE", std::string(what) + ": no NCCL library is loaded");
  if (!g.comm) throw_code("E_BACKEND_UNAVAILABLE", std::string(what) + ": NCCL is not initialised (ncclInit first)");
}

void reduce_locked(void* dev, int64_t n, bool mean, void* stream) {
  if (n < 0) throw_code("E_INVALID_ARGUMENT", "negative element count");
  if (n == 0) return;
  if (mean && g.version < 21000) throw_code("E_BACKEND_UNAVAILABLE", "a mean all-reduce needs NCCL 2.10 or newer (ncclAvg)");
  check_nccl(g.f.AllReduce(dev, dev, (size_t)n, kFloat32, mean ? kAvg : kSum, g.comm, stream), "ncclAllReduce");
}

}  // namespace

std::string open(const std::string& path) {
  std::lock_guard<std::mutex> lock(g.mu);
  if (g.handle) return g.path == path ? "" : "an NCCL library is already loaded from " + g.path + "; cannot also load " + path;
  if (path.empty()) return "no NCCL library path given";
  std::string err;
  void* h = dl_open(path, RTLD_NOW | RTLD_LOCAL, &err);
  if (!h) return err;
  Fns f;
  const char* missing = nullptr;
#define HM_SYM(n) \
  if (!missing && !dl_sym(h, "nccl" #n, &f.n)) missing = "nccl" #n;
  HM_SYM(GetVersion) HM_SYM(GetErrorString) HM_SYM(GetUniqueId) HM_SYM(CommInitRank) HM_SYM(AllReduce) HM_SYM(CommDestroy)
#undef HM_SYM
  if (missing) return path + " lacks " + missing + " (not an NCCL library?)";
  int v = 0;
  if (f.GetVersion(&v) != 0) return "ncclGetVersion failed";
  g.handle = h;
  g.f = f;
  g.path = path;
  g.version = v;
  g.fake = dlsym(h, "hiermem_fake_nccl") != nullptr;
  return "";
}

Info info() {
  std::lock_guard<std::mutex> lock(g.mu);
  Info i;
  i.loaded = g.handle != nullptr;
  i.fake = g.fake;
  i.path = g.path;
  i.version = g.version;
  i.initialized = g.comm != nullptr;
  i.rank = g.rank;
  i.size = g.size;
  if (g.comm) {
    char hex[33] = {0};
    for (int k = 0; k < 16; k++) std::snprintf(hex + 2 * k, 3, "%02x", (unsigned char)g.id.internal[k]);
    i.unique_id = hex;
  }
  return i;
}

void init_over_mpi() {
  std::lock_guard<std::mutex> lock(g.mu);
  if (!g.handle) throw_code("E_BACKEND_UNAVAILABLE", "no NCCL library is loaded");
  if (g.comm) return;
  const mpi::Info m = mpi::info();
  if (!m.initialized || m.finalized) throw_code("E_BACKEND_UNAVAILABLE", "NCCL is bootstrapped over MPI: initialise MPI first (mpiInit)");
  UniqueId id{};
  if (m.rank == 0) check_nccl(g.f.GetUniqueId(&id), "ncclGetUniqueId");
  static_assert(sizeof(UniqueId) % sizeof(float) == 0, "the id travels as floats");
  // a byte copy: MPI_Bcast does no arithmetic on MPI_FLOAT
  mpi::bcast(reinterpret_cast<float*>(id.internal), (int64_t)(sizeof id / sizeof(float)), 0);
  Comm c = nullptr;
  check_nccl(g.f.CommInitRank(&c, m.size, id, m.rank), "ncclCommInitRank");
  g.comm = c;
  g.id = id;
  g.rank = m.rank;
  g.size = m.size;
}

void allreduce_device(void* dev, int64_t n, bool mean, void* stream) {
  std::lock_guard<std::mutex> lock(g.mu);
  require_comm("ncclAllReduce");
  reduce_locked(dev, n, mean, stream);
}

void allreduce_host(float* host, int64_t n, bool mean) {
  std::lock_guard<std::mutex> lock(g.mu);
  require_comm("ncclAllReduce");
  if (g.fake) return reduce_locked(host, n, mean, nullptr);
  open_cudart();
  const size_t bytes = (size_t)n * sizeof(float);
  void* dev = nullptr;
  check_cuda(g.rt.Malloc(&dev, bytes ? bytes : 4), "cudaMalloc");
  try {
    check_cuda(g.rt.Memcpy(dev, host, bytes, kMemcpyHostToDevice), "cudaMemcpy to the device");
    reduce_locked(dev, n, mean, nullptr);
    check_cuda(g.rt.DeviceSynchronize(), "cudaDeviceSynchronize");
    check_cuda(g.rt.Memcpy(host, dev, bytes, kMemcpyDeviceToHost), "cudaMemcpy to the host");
  } catch (...) {
    g.rt.Free(dev);
    throw;
  }
  g.rt.Free(dev);
}

void destroy() {
  std::lock_guard<std::mutex> lock(g.mu);
  if (g.comm) g.f.CommDestroy(g.comm);
  g.comm = nullptr;
}

}  // namespace hmb::nccl
