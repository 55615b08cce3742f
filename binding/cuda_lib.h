// cuda_lib.h — the dlopen'ed CUDA library as the rest of the binding sees it (cuda_lib.cc): the
// loaded function table, error texts, and the error form usable off the JS thread.
#pragma once
#include <napi.h>

#include <cstdint>
#include <string>

#include "../cuda/hiermem_cuda.h"  // plain C++: no CUDA headers needed

namespace hmb {

// The loaded library's table, or E_BACKEND_UNAVAILABLE when none is loaded (cudaOpen first).
const hmc_api* require_cuda_api(Napi::Env env);
// "<cudaGetErrorString> (cudaError N)" through the library.
std::string cuda_error_text(const hmc_api* api, int32_t status);
// Error for the worker thread (no Napi::Env there): PromiseWorker turns it into a rejection whose
// message keeps the "[E_CODE] " prefix that lib/native.ts maps to HiermemError.
[[noreturn]] void throw_code(const char* code, const std::string& msg);

// cuda_model.cc: createCudaAnchorModel
void RegisterCudaModel(Napi::Env env, Napi::Object exports);

}  // namespace hmb
