// mpi_lib.cc — the dlopen'ed MPI library (see mpi_lib.h). The dozen entry points are declared here
// by hand, once per ABI: Fns<void*> for Open MPI (handles are pointers), Fns<int> for MPICH (handles
// are ints), so that every call passes its handles with the type the library was compiled for.
#include "mpi_lib.h"

#include <algorithm>
#include <climits>
#include <cstring>
#include <mutex>
#include <vector>

#include "dl_lib.h"

namespace hmb::mpi {

namespace {

constexpr int kThreadSerialized = 2;  // MPI_THREAD_SERIALIZED: the same value in both ABIs

template <typename H>
struct Fns {
  int (*Init_thread)(int*, char***, int, int*) = nullptr;
  int (*Initialized)(int*) = nullptr;
  int (*Finalized)(int*) = nullptr;
  int (*Finalize)() = nullptr;
  int (*Comm_rank)(H, int*) = nullptr;
  int (*Comm_size)(H, int*) = nullptr;
  int (*Allgather)(const void*, int, H, void*, int, H, H) = nullptr;
  int (*Alltoall)(const void*, int, H, void*, int, H, H) = nullptr;
  int (*Bcast)(void*, int, H, int, H) = nullptr;
  int (*Barrier)(H) = nullptr;
  int (*Abort)(H, int) = nullptr;
  double (*Wtime)() = nullptr;
  int (*Error_string)(int, char*, int*) = nullptr;
  int (*Get_library_version)(char*, int*) = nullptr;
  H comm_world{}, flt{};
};

struct Lib {
  std::mutex mu;  // serialises every call but Abort
  void* handle = nullptr;
  std::string path;
  Abi abi = Abi::None;
  Fns<void*> ompi;
  Fns<int> mpich;
  int rank = 0, size = 1, thread_level = -1;
  bool we_initialized = false;
  std::vector<float> send, recv, gathered;  // scratch of allreduce_ordered, reused
};
Lib g;

template <typename H>
std::string bind(void* h, Fns<H>& f) {
  const char* missing = nullptr;
#define HM_SYM(n)                                              \
  if (!missing && !dl_sym(h, "MPI_" #n, &f.n)) missing = "MPI_" #n;
  HM_SYM(Init_thread) HM_SYM(Initialized) HM_SYM(Finalized) HM_SYM(Finalize) HM_SYM(Comm_rank) HM_SYM(Comm_size)
  HM_SYM(Allgather) HM_SYM(Alltoall) HM_SYM(Bcast) HM_SYM(Barrier) HM_SYM(Abort) HM_SYM(Wtime) HM_SYM(Error_string)
  HM_SYM(Get_library_version)
#undef HM_SYM
  return missing ? std::string("lacks ") + missing : std::string();
}

// Runs `fn` with the bound table of the library's ABI.
template <typename F>
auto with(F fn) {
  if (g.abi == Abi::OpenMPI) return fn(g.ompi);
  return fn(g.mpich);
}

std::string error_text(int rc) {
  char buf[1024] = {0};
  int len = 0;
  with([&](auto& f) { return f.Error_string(rc, buf, &len); });
  buf[sizeof buf - 1] = 0;
  return std::string(buf) + " (MPI error " + std::to_string(rc) + ")";
}

void check_rc(int rc, const char* what) {
  if (rc != 0) throw_code("E_COMM", std::string(what) + " failed: " + error_text(rc));
}

bool flag(bool finalized_query) {
  int v = 0;
  with([&](auto& f) { return (finalized_query ? f.Finalized : f.Initialized)(&v); });
  return v != 0;
}

// Under the lock: the library is loaded, initialised and not finalised.
void require_ready(const char* what) {
  if (!g.handle) throw_code("E_BACKEND_UNAVAILABLE", std::string(what) + ": no MPI library is loaded");
  if (!flag(false)) throw_code("E_BACKEND_UNAVAILABLE", std::string(what) + ": MPI is not initialised (mpiInit first)");
  if (flag(true)) throw_code("E_COMM", std::string(what) + ": MPI was already finalised");
}

int count_of(int64_t n, const char* what) {
  if (n < 0 || n > INT_MAX) throw_code("E_INVALID_ARGUMENT", std::string(what) + ": " + std::to_string(n) + " elements exceed MPI's int count");
  return (int)n;
}

}  // namespace

std::string open(const std::string& path) {
  std::lock_guard<std::mutex> lock(g.mu);
  if (g.handle) return g.path == path ? "" : "an MPI library is already loaded from " + g.path + "; cannot also load " + path;
  if (path.empty()) return "no MPI library path given";
  std::string err;
  // RTLD_GLOBAL: Open MPI's components (dlopen'ed by libmpi) resolve libmpi's symbols globally
  void* h = dl_open(path, RTLD_NOW | RTLD_GLOBAL, &err);
  if (!h) return err;
  // Never dlclosed (also on the error paths below): its constructors may have run.
  void* world = dlsym(h, "ompi_mpi_comm_world");
  if (world) {
    err = bind(h, g.ompi);
    void* flt = dlsym(h, "ompi_mpi_float");
    if (err.empty() && !flt) err = "lacks ompi_mpi_float";
    g.ompi.comm_world = world;
    g.ompi.flt = flt;
    if (err.empty()) g.abi = Abi::OpenMPI;
  } else {
    err = bind(h, g.mpich);
    g.mpich.comm_world = 0x44000000;  // MPICH's mpi.h: MPI_COMM_WORLD
    g.mpich.flt = 0x4c00040a;         // MPI_FLOAT
    if (err.empty()) g.abi = Abi::MPICH;
  }
  if (!err.empty()) return path + " is not a usable MPI library (" + err + ")";
  g.handle = h;
  g.path = path;
  return "";
}

Info info() {
  std::lock_guard<std::mutex> lock(g.mu);
  Info i;
  i.loaded = g.handle != nullptr;
  i.path = g.path;
  i.abi = g.abi;
  if (!g.handle) return i;
  i.initialized = flag(false);
  i.finalized = flag(true);
  i.rank = g.rank;
  i.size = g.size;
  i.thread_level = g.thread_level;
  std::vector<char> buf(8192, 0);  // MPICH's MPI_MAX_LIBRARY_VERSION_STRING; Open MPI's is smaller
  int len = 0;
  if (with([&](auto& f) { return f.Get_library_version(buf.data(), &len); }) == 0) {
    buf.back() = 0;
    std::string v(buf.data());
    i.version = v.substr(0, v.find_first_of("\r\n"));
  }
  return i;
}

int world_size() { return g.size; }  // written by init() on the JS thread, read there too

void init() {
  std::lock_guard<std::mutex> lock(g.mu);
  if (!g.handle) throw_code("E_BACKEND_UNAVAILABLE", "no MPI library is loaded");
  if (flag(true)) throw_code("E_COMM", "MPI was already finalised in this process; it cannot be initialised again");
  if (!flag(false)) {
    int provided = -1;
    check_rc(with([&](auto& f) { return f.Init_thread(nullptr, nullptr, kThreadSerialized, &provided); }), "MPI_Init_thread");
    g.thread_level = provided;
    g.we_initialized = true;
    if (provided < kThreadSerialized)
      throw_code("E_BACKEND_UNAVAILABLE", "the MPI library provides thread level " + std::to_string(provided) +
                                              "; hiermem needs MPI_THREAD_SERIALIZED (collectives run on worker threads)");
  }
  check_rc(with([&](auto& f) { return f.Comm_rank(f.comm_world, &g.rank); }), "MPI_Comm_rank");
  check_rc(with([&](auto& f) { return f.Comm_size(f.comm_world, &g.size); }), "MPI_Comm_size");
}

void allreduce_ordered(float* buf, int64_t n, bool mean) {
  std::lock_guard<std::mutex> lock(g.mu);
  require_ready("allReduce");
  const int64_t P = g.size;
  if (n == 0) return;
  // Reduce-scatter by all-to-all: rank r receives chunk r of every rank and adds the P copies in
  // rank order (the same order, hence the same bits, wherever it runs); then all-gather the sums.
  // MPI_Allreduce's own order may differ by algorithm and rank; this one cannot. Same traffic as a
  // ring all-reduce: 2 (P-1)/P of the buffer sent per rank.
  const int64_t chunk = (n + P - 1) / P;
  const int c = count_of(chunk, "allReduce chunk");
  g.send.assign((size_t)(P * chunk), 0.0f);
  std::memcpy(g.send.data(), buf, (size_t)n * sizeof(float));
  g.recv.resize((size_t)(P * chunk));
  g.gathered.resize((size_t)(P * chunk));
  if (P > 1) {
    check_rc(with([&](auto& f) { return f.Alltoall(g.send.data(), c, f.flt, g.recv.data(), c, f.flt, f.comm_world); }), "MPI_Alltoall");
  } else {
    g.recv = g.send;
  }
  float* sum = g.send.data();  // reused: chunk floats
  const float inv = (float)P;
  for (int64_t i = 0; i < chunk; i++) {
    float s = g.recv[(size_t)i];
    for (int64_t r = 1; r < P; r++) s += g.recv[(size_t)(r * chunk + i)];
    sum[i] = mean ? s / inv : s;
  }
  if (P > 1) {
    check_rc(with([&](auto& f) { return f.Allgather(sum, c, f.flt, g.gathered.data(), c, f.flt, f.comm_world); }), "MPI_Allgather");
    std::memcpy(buf, g.gathered.data(), (size_t)n * sizeof(float));
  } else {
    std::memcpy(buf, sum, (size_t)n * sizeof(float));
  }
}

void allgather(const float* send, int64_t n, float* recv) {
  std::lock_guard<std::mutex> lock(g.mu);
  require_ready("allGather");
  const int c = count_of(n, "allGather");
  if (n == 0) return;
  check_rc(with([&](auto& f) { return f.Allgather(send, c, f.flt, recv, c, f.flt, f.comm_world); }), "MPI_Allgather");
}

void bcast(float* buf, int64_t n, int root) {
  std::lock_guard<std::mutex> lock(g.mu);
  require_ready("broadcast");
  const int c = count_of(n, "broadcast");
  if (root < 0 || root >= g.size) throw_code("E_INVALID_ARGUMENT", "broadcast root " + std::to_string(root) + " is not a rank");
  if (n == 0) return;
  check_rc(with([&](auto& f) { return f.Bcast(buf, c, f.flt, root, f.comm_world); }), "MPI_Bcast");
}

void barrier() {
  std::lock_guard<std::mutex> lock(g.mu);
  require_ready("barrier");
  check_rc(with([&](auto& f) { return f.Barrier(f.comm_world); }), "MPI_Barrier");
}

void abort_job(int code) {
  if (!g.handle) return;
  with([&](auto& f) { return f.Abort(f.comm_world, code); });
}

void finalize() {
  std::lock_guard<std::mutex> lock(g.mu);
  if (!g.handle || !g.we_initialized || flag(true) || !flag(false)) return;
  check_rc(with([&](auto& f) { return f.Finalize(); }), "MPI_Finalize");
}

double wtime() {
  std::lock_guard<std::mutex> lock(g.mu);
  if (!g.handle) throw_code("E_BACKEND_UNAVAILABLE", "no MPI library is loaded");
  return with([&](auto& f) { return f.Wtime(); });
}

}  // namespace hmb::mpi
