// api.cu — the one exported symbol of hiermem_cuda.so: a versioned table of entry points, so the
// addon resolves a single name with dlsym and refuses a library built for another ABI.
#include <cuda_runtime.h>

#include "hiermem_cuda.h"

namespace hmc {
int32_t device_info(int32_t device, hmc_device_info* out);
}

namespace {

const char* error_string(int32_t status) { return cudaGetErrorString((cudaError_t)status); }
int32_t dev_malloc(void** p, size_t bytes) { return (int32_t)cudaMalloc(p, bytes); }
int32_t dev_free(void* p) { return (int32_t)cudaFree(p); }
int32_t h2d(void* dst, const void* src, size_t bytes, void* stream) {
  return (int32_t)cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, (cudaStream_t)stream);
}
int32_t d2h(void* dst, const void* src, size_t bytes, void* stream) {
  return (int32_t)cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, (cudaStream_t)stream);
}
int32_t sync(void* stream) { return (int32_t)cudaStreamSynchronize((cudaStream_t)stream); }

const hmc_api kApi = {HMC_ABI_VERSION, hmc::device_info, error_string, dev_malloc, dev_free, h2d, d2h, sync};

}  // namespace

extern "C" const hmc_api* hmc_get_api(int32_t abi_version) {
  return abi_version == HMC_ABI_VERSION ? &kApi : nullptr;
}
