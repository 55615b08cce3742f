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
int32_t stream_create(void** stream) {
  if (!stream) return (int32_t)cudaErrorInvalidValue;
  return (int32_t)cudaStreamCreateWithFlags((cudaStream_t*)stream, cudaStreamNonBlocking);
}
int32_t stream_destroy(void* stream) { return (int32_t)cudaStreamDestroy((cudaStream_t)stream); }
int32_t host_malloc(void** p, size_t bytes) { return (int32_t)cudaMallocHost(p, bytes); }
int32_t host_free(void* p) { return (int32_t)cudaFreeHost(p); }
int32_t dev_memset(void* dst, int32_t value, size_t bytes, void* stream) {
  return (int32_t)cudaMemsetAsync(dst, value, bytes, (cudaStream_t)stream);
}

// the device model: the table passes pointers and plain ints (no C++ references across dlopen)
void* model_create(const hmc::ModelDims* d, const hmc::ModelMemory* mem, int64_t max_batch, float* params,
                   float* grads, int32_t gemm_mode, int32_t* err) {
  if (!d || !mem) {
    if (err) *err = (int32_t)cudaErrorInvalidValue;
    return nullptr;
  }
  int e = 0;
  hmc::Model* m = hmc::model_create(*d, *mem, max_batch, params, grads, (hmc::GemmMode)gemm_mode, &e);
  if (err) *err = (int32_t)e;
  return m;
}
void model_destroy(void* m) { hmc::model_destroy((hmc::Model*)m); }
int32_t model_forward_backward(void* m, const hmc::ModelBatch* b, double* loss_host, void* stream) {
  if (!b) return (int32_t)cudaErrorInvalidValue;
  return (int32_t)hmc::model_forward_backward((hmc::Model*)m, *b, loss_host, stream);
}
int32_t model_forward_loss(void* m, const hmc::ModelBatch* b, double* loss_host, void* stream) {
  if (!b) return (int32_t)cudaErrorInvalidValue;
  return (int32_t)hmc::model_forward_loss((hmc::Model*)m, *b, loss_host, stream);
}
int32_t adamw_update(float* p, const float* g, float* m, float* v, int64_t n, const hmc::AdamWConsts* k,
                     void* stream) {
  if (!k) return (int32_t)cudaErrorInvalidValue;
  return (int32_t)hmc::adamw_update(p, g, m, v, n, *k, stream);
}
int32_t global_sumsq(double* out_dev, const float* g, int64_t n, double* scratch, void* stream) {
  return (int32_t)hmc::global_sumsq(out_dev, g, n, scratch, stream);
}
int64_t global_norm_scratch_doubles(int64_t n) { return hmc::global_norm_scratch_doubles(n); }

// positional: exactly the field order of hmc_api in hiermem_cuda.h
const hmc_api kApi = {HMC_ABI_VERSION, hmc::device_info, error_string, dev_malloc, dev_free, h2d, d2h, sync,
                      stream_create, stream_destroy, host_malloc, host_free, dev_memset,
                      model_create, model_destroy, model_forward_backward, model_forward_loss,
                      adamw_update, global_sumsq, global_norm_scratch_doubles};

}  // namespace

extern "C" const hmc_api* hmc_get_api(int32_t abi_version) {
  return abi_version == HMC_ABI_VERSION ? &kApi : nullptr;
}
