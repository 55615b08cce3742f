// runtime.cu — device queries for the loader and `hiermem info --gpu`. Never aborts: without a
// driver cudaGetDeviceCount returns cudaErrorInsufficientDriver (35) and we report it as a status.
#include <cuda_runtime.h>

#include <cstdio>
#include <cstring>

#include "hiermem_cuda.h"

namespace hmc {

int32_t device_info(int32_t device, hmc_device_info* out) {
  std::memset(out, 0, sizeof(*out));
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  cudaDriverGetVersion(&out->driver_version);  // 0 when no driver is installed
  cudaRuntimeGetVersion(&out->runtime_version);
  if (e != cudaSuccess) {
    cudaGetLastError();
    out->status = (int32_t)e;
    std::snprintf(out->status_text, sizeof(out->status_text), "%s", cudaGetErrorString(e));
    return out->status;
  }
  out->device_count = count;
  if (count == 0 || device < 0 || device >= count) {
    out->status = (int32_t)cudaErrorNoDevice;
    std::snprintf(out->status_text, sizeof(out->status_text), count == 0 ? "no CUDA device" : "device index out of range");
    return out->status;
  }
  cudaDeviceProp prop;
  e = cudaGetDeviceProperties(&prop, device);
  if (e == cudaSuccess) e = cudaSetDevice(device);
  size_t free_b = 0, total_b = 0;
  if (e == cudaSuccess) e = cudaMemGetInfo(&free_b, &total_b);
  if (e != cudaSuccess) {
    cudaGetLastError();
    out->status = (int32_t)e;
    std::snprintf(out->status_text, sizeof(out->status_text), "%s", cudaGetErrorString(e));
    return out->status;
  }
  out->cc_major = prop.major;
  out->cc_minor = prop.minor;
  out->free_bytes = (int64_t)free_b;
  out->total_bytes = (int64_t)total_b;
  std::snprintf(out->name, sizeof(out->name), "%s", prop.name);
  std::snprintf(out->status_text, sizeof(out->status_text), "ok");
  return 0;
}

}  // namespace hmc
