/**
 * Compatibility: what lib/backend.ts exported before the seam moved to lib/backend/ (detection and
 * runners), lib/model/cuda-anchor.ts (the device model) and lib/train/cuda-adamw.ts (its AdamW).
 * Kept for deep imports of dist/lib/backend.js; new code imports from those places.
 */
export * from './backend/index.js';
export { CudaAnchorModel, type CudaModelOptions, type GemmPrecision } from './model/cuda-anchor.js';
export { CudaAdamW } from './train/cuda-adamw.js';
