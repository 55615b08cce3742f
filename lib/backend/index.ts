/**
 * The backend seam: detection (./detect.ts) and the runners (./runner.ts, ./cuda-runner.ts).
 */
export {
  resolveBackend, detectGpu, nvidiaDriverPresent, cudaLibraryPath, BACKEND_ENV, CUDA_LIB_ENV, CUDA_LIB_NAME,
  GPU_PROBE_TIMEOUT_MS, DEFAULT_BACKEND, type Backend, type ResolvedBackend, type GpuInfo,
} from './detect.js';
export { CpuAnchorRunner, createAnchorRunner, type AnchorRunner, type BackendRunner, type RunnerOptions } from './runner.js';
export { CudaAnchorRunner, type CudaRunnerOptions } from './cuda-runner.js';
