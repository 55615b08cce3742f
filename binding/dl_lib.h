// dl_lib.h — what the binding's dlopen'ed libraries (mpi_lib.cc, nccl_lib.cc) share: opening a
// library with dlerror's reason, typed symbol lookup, and the binding's "[E_CODE] " error form.
#pragma once
#include <dlfcn.h>

#include <string>

namespace hmb {

// Defined in cuda_lib.cc (declared in cuda_lib.h too): std::runtime_error("[<code>] <msg>"), which
// lib/native.ts maps to HiermemError.
[[noreturn]] void throw_code(const char* code, const std::string& msg);

// Looks `name` up in `h` into `out` (a function pointer); false when the library lacks it.
template <typename T>
bool dl_sym(void* h, const char* name, T* out) {
  void* p = dlsym(h, name);
  *out = reinterpret_cast<T>(p);
  return p != nullptr;
}

// dlopen(path, flags); on failure null, with `*err` saying why (dlerror names the file).
inline void* dl_open(const std::string& path, int flags, std::string* err) {
  dlerror();  // clear a stale message
  void* h = dlopen(path.c_str(), flags);
  if (!h) {
    const char* e = dlerror();
    *err = "dlopen failed: " + std::string(e ? e : path.c_str());
  }
  return h;
}

}  // namespace hmb
