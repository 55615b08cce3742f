// nccl_lib.h — NCCL opened with dlopen (issue #14, item 7): the addon links no NCCL (nor CUDA), so
// a machine without it loads the addon as always. NCCL is bootstrapped over MPI as llm.c does:
// rank 0 asks ncclGetUniqueId, MPI broadcasts the 128-byte id, every rank calls ncclCommInitRank.
// All-reduces run on device buffers (the CUDA backend's gradients), in place, on the given stream
// (null: the legacy default stream, so later device work on it sees the result). A host-buffer
// all-reduce stages through device memory from the CUDA runtime (libcudart, also dlopen'ed): the
// self-check of bench/gpu.sh. A test double of libnccl (test/fake-nccl.ts) exports
// hiermem_fake_nccl: its "device" is host memory, so host buffers are passed as they are.
// Failures throw std::runtime_error whose message starts with "[E_CODE] ".
#pragma once
#include <cstdint>
#include <string>

namespace hmb::nccl {

struct Info {
  bool loaded = false;
  bool fake = false;  // the test double (device pointers are host pointers)
  std::string path;
  int version = 0;  // NCCL_VERSION_CODE, e.g. 21903 for 2.19.3
  bool initialized = false;
  int rank = 0, size = 1;
  std::string unique_id;  // hex of the id's first 16 bytes (the same on every rank once initialised)
};

// Opens libnccl at `path`; returns "" or why it cannot be used. One library per process.
std::string open(const std::string& path);
Info info();
// ncclCommInitRank over MPI (MPI must be initialised): rank 0's unique id broadcast to all.
void init_over_mpi();
// In place on device memory: the sum (or mean) over ranks of n floats.
void allreduce_device(void* dev, int64_t n, bool mean, void* stream);
// In place on host memory: staged through the device (CUDA runtime), or direct with the fake.
void allreduce_host(float* host, int64_t n, bool mean);
void destroy();

}  // namespace hmb::nccl
