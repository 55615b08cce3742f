/**
 * A test double of libnccl.so.2 (tests only), built with g++: the entry points hiermem declares,
 * with host memory as "device" memory and the all-reduce done by the MPI library already loaded in
 * the process (Open MPI's ABI, found with dlsym(RTLD_DEFAULT)). It exports hiermem_fake_nccl (so
 * the addon passes host buffers as they are) and, with HIERMEM_FAKE_NCCL_LOG set, appends what it
 * was asked to that file: "id <hex>" from ncclGetUniqueId, "init <rank> <nranks> <hex>" from
 * ncclCommInitRank, "allreduce <count> <op>" — so a test can see the bootstrap: one id, made on
 * rank 0, reaching every rank.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

export const hasGxx = spawnSync('g++', ['--version']).status === 0;

export const FAKE_NCCL_SOURCE = String.raw`
#include <dlfcn.h>
#include <unistd.h>
#include <cstdio>
#include <cstdlib>
#include <cstring>
struct UniqueId { char internal[128]; };
struct FakeComm { int rank, nranks; };
#define API extern "C" __attribute__((visibility("default")))
API int hiermem_fake_nccl = 1;
static void note(const char* fmt, const char* a, int x, int y) {
  const char* f = std::getenv("HIERMEM_FAKE_NCCL_LOG");
  if (!f) return;
  FILE* o = std::fopen(f, "a");
  if (!o) return;
  std::fprintf(o, fmt, x, y, a);
  std::fclose(o);
}
static void hex(const UniqueId& id, char* out) { for (int i = 0; i < 16; i++) std::snprintf(out + 2 * i, 3, "%02x", (unsigned char)id.internal[i]); }
API int ncclGetVersion(int* v) { *v = 21903; return 0; }
API const char* ncclGetErrorString(int r) { static char b[64]; std::snprintf(b, sizeof b, "fake nccl error %d", r); return b; }
API int ncclGetUniqueId(UniqueId* id) {
  unsigned s = (unsigned)getpid() * 2654435761u;
  for (int i = 0; i < 128; i++) { s = s * 1103515245u + 12345u; id->internal[i] = (char)(s >> 16); }
  char h[33] = {0}; hex(*id, h);
  note("id %d %d %s\n", h, 0, 0);
  return 0;
}
API int ncclCommInitRank(FakeComm** c, int nranks, UniqueId id, int rank) {
  if (nranks < 1 || rank < 0 || rank >= nranks) return 4;  // ncclInvalidArgument
  *c = new FakeComm{rank, nranks};
  char h[33] = {0}; hex(id, h);
  note("init %d %d %s\n", h, rank, nranks);
  return 0;
}
typedef int (*Allreduce)(const void*, void*, int, void*, void*, void*);
API int ncclAllReduce(const void* send, void* recv, size_t count, int dtype, int op, FakeComm* c, void*) {
  if (dtype != 7 || (op != 0 && op != 4)) return 4;
  note("allreduce %d %d%s\n", "", (int)count, op);
  if (send != recv) std::memcpy(recv, send, count * sizeof(float));
  if (c->nranks > 1) {
    auto fn = (Allreduce)dlsym(RTLD_DEFAULT, "MPI_Allreduce");
    void* flt = dlsym(RTLD_DEFAULT, "ompi_mpi_float");
    void* sum = dlsym(RTLD_DEFAULT, "ompi_mpi_op_sum");
    void* world = dlsym(RTLD_DEFAULT, "ompi_mpi_comm_world");
    if (!fn || !flt || !sum || !world) return 2;  // ncclSystemError: needs Open MPI loaded
    if (fn((void*)1 /* MPI_IN_PLACE */, recv, (int)count, flt, sum, world) != 0) return 2;
  }
  if (op == 4) for (size_t i = 0; i < count; i++) ((float*)recv)[i] /= (float)c->nranks;
  return 0;
}
API int ncclCommDestroy(FakeComm* c) { delete c; return 0; }
`;

/** Builds the double into dir/libnccl-fake.so.2; returns its path. */
export function buildFakeNccl(dir: string): string {
  const cc = path.join(dir, 'fake-nccl.cc');
  const so = path.join(dir, 'libnccl-fake.so.2');
  fs.writeFileSync(cc, FAKE_NCCL_SOURCE);
  const r = spawnSync('g++', ['-std=c++17', '-fPIC', '-fvisibility=hidden', '-O1', '-shared', '-o', so, cc, '-ldl'], { encoding: 'utf8' });
  assert.equal(r.status, 0, `g++ fake nccl: ${r.stderr}`);
  return so;
}
