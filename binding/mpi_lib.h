// mpi_lib.h — MPI opened with dlopen (issue #14): the addon links no MPI, so a machine without it
// loads the addon as always. Open MPI (libmpi.so.40) and MPICH (libmpi.so.12) differ in ABI: Open
// MPI's handles are addresses of global symbols (ompi_mpi_comm_world, ...), MPICH's are integer
// constants; mpi_lib.cc tells them apart by the ompi_mpi_comm_world symbol, as mpi4py does.
//
// Every MPI call goes through one mutex (the library is initialised at MPI_THREAD_SERIALIZED:
// collectives run on libuv pool threads, one at a time). Failures throw std::runtime_error whose
// message starts with "[E_CODE] ", like the rest of the binding.
#pragma once
#include <cstdint>
#include <string>

namespace hmb::mpi {

enum class Abi { None, OpenMPI, MPICH };

struct Info {
  bool loaded = false;
  std::string path;
  Abi abi = Abi::None;
  bool initialized = false;  // by us or by someone else in this process
  bool finalized = false;
  int rank = 0, size = 1, thread_level = -1;
  std::string version;  // MPI_Get_library_version, first line
};

// Opens the library at `path` (RTLD_GLOBAL: Open MPI's plugins resolve libmpi's symbols through
// it); returns "" or why it cannot be used. One library per process, kept open once accepted.
std::string open(const std::string& path);
Info info();
// The world size (1 until init), without taking the lock: a collective in flight holds it.
int world_size();

// MPI_Init_thread at SERIALIZED or better (idempotent); fills rank/size.
void init();
// In place: buf (n floats, identical n on every rank) becomes the sum over ranks, added in rank
// order so that every rank gets the same bits; divided by the rank count when `mean`.
void allreduce_ordered(float* buf, int64_t n, bool mean);
// recv (size * n floats) gets every rank's `send` (n floats), in rank order.
void allgather(const float* send, int64_t n, float* recv);
void bcast(float* buf, int64_t n, int root);
void barrier();
// Not serialised on purpose: it must work while a collective is blocked in another thread.
void abort_job(int code);
void finalize();
double wtime();

}  // namespace hmb::mpi
