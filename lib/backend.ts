/**
 * Compute backends (issue #8): the native CPU core, or CUDA through hiermem_cuda.so.
 *
 * The CUDA library is HIERMEM_CUDA_LIB, else the one beside the loaded addon (build/Release/,
 * prebuilds/<platform>-<arch>/ or the platform package), else the one in the CUDA platform package
 * (@hiermem/<platform>-<arch>-cuda, an optional dependency). It is probed in a CHILD process first (load + device query), so that a
 * broken driver can only take the child down; only a library that answered there is opened in
 * this process. Nothing here ever prints on a machine without an NVIDIA driver.
 *
 * CudaAnchorModel / CudaAdamW are the device twins of AnchorModel / AdamW that a trainer needs
 * (forwardBackward, loss, zeroGrad, tensor downloads, AdamW with global-norm clipping on the
 * device). Experimental: the kernels have not yet run on a GPU. The train loop reaches them through
 * lib/train/cuda-runner.ts (`backend: 'cuda'`).
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { HiermemError, check } from './errors.js';
import { CUDA_PLATFORM_PACKAGE, loadNative, nativeAddonPath, resolvePackageDir } from './native.js';
import type { CudaDeviceInfo, NativeAddon, NativeCudaModel, NativeMemoryBatch, TensorSlot } from './native-types.js';
import { type ModelConfig, resolveModelConfig, toDims, anchorParamCount } from './model/config.js';
import { initAnchorParams } from './model/init.js';
import type { Batch, CreateModelOptions } from './model/anchor.js';
import { decaySegments, resolveAdamW, type AdamWOptions, type StepResult } from './train/adamw.js';

export type Backend = 'cpu' | 'cuda' | 'auto';
export type ResolvedBackend = 'cpu' | 'cuda';

/** Overrides a requested 'auto' (cpu | cuda | auto). */
export const BACKEND_ENV = 'HIERMEM_BACKEND';
/** Path of the CUDA library to use instead of the one beside the addon. */
export const CUDA_LIB_ENV = 'HIERMEM_CUDA_LIB';
export const CUDA_LIB_NAME = 'hiermem_cuda.so';
/** The child probe's time limit: a hung driver must not hang hiermem. */
export const GPU_PROBE_TIMEOUT_MS = 20_000;

export interface GpuInfo {
  /** A CUDA device answered (status 0) in the child probe. */
  available: boolean;
  /** 'ok', or one line saying why no GPU can be used. */
  reason: string;
  /** An NVIDIA kernel driver is visible (/proc/driver/nvidia, /dev/nvidiactl, or WSL's /dev/dxg). */
  driverPresent: boolean;
  library: {
    /** The hiermem_cuda.so that was tried (null when the addon's location is unknown). */
    path: string | null;
    found: boolean;
    loaded: boolean;
    error?: string;
  };
  /** The device query's answer (device 0), when the library loaded. */
  device: CudaDeviceInfo | null;
}

// ---- where things are ---------------------------------------------------------------------

/** True where an NVIDIA driver is installed: the only case in which a CUDA failure is news. */
export function nvidiaDriverPresent(): boolean {
  return ['/proc/driver/nvidia', '/dev/nvidiactl', '/dev/dxg'].some((p) => fs.existsSync(p));
}

/**
 * HIERMEM_CUDA_LIB; else the first existing of hiermem_cuda.so beside the loaded addon and in the
 * CUDA platform package; else the path beside the addon (so that "not found" names it); null if
 * the addon's file is unknown and no platform package is installed.
 */
export function cudaLibraryPath(): string | null {
  const env = process.env[CUDA_LIB_ENV];
  if (env !== undefined && env !== '') return path.resolve(env);
  const candidates = cudaLibraryCandidates();
  return candidates.find((p) => fs.existsSync(p)) ?? candidates[0] ?? null;
}

/** Where hiermem_cuda.so is looked for without HIERMEM_CUDA_LIB, in order. */
function cudaLibraryCandidates(): string[] {
  const out: string[] = [];
  const addon = nativeAddonPath();
  if (addon) out.push(path.join(path.dirname(addon), CUDA_LIB_NAME));
  const pkg = resolvePackageDir(CUDA_PLATFORM_PACKAGE);
  if (pkg !== null) out.push(path.join(pkg, CUDA_LIB_NAME));
  return out;
}

function hasCudaBinding(addon: NativeAddon): boolean {
  return typeof (addon as Partial<NativeAddon>).cudaOpen === 'function';
}

// ---- the child probe ----------------------------------------------------------------------

/** Runs in a fresh node: loads the addon by path, opens the library, queries device 0, prints JSON. */
const PROBE_SOURCE = String.raw`
'use strict';
const out = { ok: false };
try {
  const mod = { exports: {} };
  process.dlopen(mod, process.argv[1]);
  const a = mod.exports;
  if (typeof a.cudaOpen !== 'function') {
    out.error = 'this hiermem addon was built without the CUDA loader';
  } else {
    out.open = a.cudaOpen(process.argv[2]);
    if (out.open.loaded) out.device = a.cudaDeviceInfo(0);
    out.ok = true;
  }
} catch (e) {
  out.error = String((e && e.message) || e);
}
process.stdout.write(JSON.stringify(out));
`;

interface ProbeReport {
  ok: boolean;
  error?: string;
  open?: { loaded: boolean; path: string; error?: string };
  device?: CudaDeviceInfo;
}

const probeCache = new Map<string, GpuInfo>();

function lastLine(s: string): string {
  const lines = s.trim().split('\n').filter((l) => l.trim() !== '');
  return lines.length ? lines[lines.length - 1]!.trim() : '';
}

function probeInChild(addonPath: string, libPath: string): ProbeReport {
  const env = { ...process.env };
  delete env.NODE_OPTIONS; // no loaders / inspectors in the probe
  const r = spawnSync(process.execPath, ['-e', PROBE_SOURCE, addonPath, libPath], {
    encoding: 'utf8',
    timeout: GPU_PROBE_TIMEOUT_MS,
    killSignal: 'SIGKILL',
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  if (r.error && (r.error as NodeJS.ErrnoException).code === 'ETIMEDOUT') {
    return { ok: false, error: `the GPU probe did not answer within ${GPU_PROBE_TIMEOUT_MS / 1000} s (a hung driver?)` };
  }
  if (r.error) return { ok: false, error: `cannot run the GPU probe: ${r.error.message}` };
  if (r.signal) return { ok: false, error: `the GPU probe crashed (${r.signal})${r.stderr ? ': ' + lastLine(r.stderr) : ''}` };
  try {
    return JSON.parse(r.stdout) as ProbeReport;
  } catch {
    return { ok: false, error: `the GPU probe failed (exit ${r.status}): ${lastLine(r.stderr ?? '') || 'no output'}` };
  }
}

/**
 * What a CUDA device query finds, from a child process (cached per library path for the life of
 * this process; `refresh` probes again). Never throws for a missing GPU, driver or library: the
 * answer says why in `reason`.
 */
export function detectGpu(options: { refresh?: boolean } = {}): GpuInfo {
  const driverPresent = nvidiaDriverPresent();
  const libPath = cudaLibraryPath();
  const key = libPath ?? '';
  const hit = probeCache.get(key);
  if (hit && !options.refresh) return hit;
  const info: GpuInfo = {
    available: false,
    reason: '',
    driverPresent,
    library: { path: libPath, found: false, loaded: false },
    device: null,
  };
  const addonPath = nativeAddonPath();
  if (!libPath || !addonPath) {
    info.reason = 'cannot tell where the native addon was loaded from, so no CUDA library to look for';
  } else if (!fs.existsSync(libPath)) {
    info.reason = process.env[CUDA_LIB_ENV]
      ? `${CUDA_LIB_ENV}=${process.env[CUDA_LIB_ENV]}: no such file`
      : `no CUDA library at ${cudaLibraryCandidates().join(' or ')} (hiermem was built without nvcc` +
        `${resolvePackageDir(CUDA_PLATFORM_PACKAGE) === null ? `, and ${CUDA_PLATFORM_PACKAGE} is not installed` : ''})`;
  } else if (!hasCudaBinding(loadNative())) {
    info.library.found = true;
    info.reason = 'this hiermem addon was built without the CUDA loader';
  } else {
    info.library.found = true;
    const rep = probeInChild(addonPath, libPath);
    if (!rep.ok || !rep.open) {
      info.reason = rep.error ?? 'the GPU probe gave no answer';
    } else if (!rep.open.loaded) {
      info.library.error = rep.open.error ?? 'not loaded';
      info.reason = info.library.error;
    } else {
      info.library.loaded = true;
      info.device = rep.device ?? null;
      const d = rep.device;
      if (!d) info.reason = 'the device query gave no answer';
      else if (d.status !== 0) info.reason = `${d.statusText} (cudaError ${d.status})`;
      else {
        info.available = true;
        info.reason = 'ok';
      }
    }
  }
  probeCache.set(key, info);
  return info;
}

// ---- backend selection ---------------------------------------------------------------------

let inProcess: { ok: true } | { ok: false; reason: string } | undefined;
let noticePrinted = false;

/** Opens the library in this process after the child probe found a device; the reason if it cannot. */
function openInProcess(gpu: GpuInfo): string | null {
  if (!gpu.available || !gpu.library.path) return gpu.reason;
  if (inProcess) return inProcess.ok ? null : inProcess.reason;
  const addon = loadNative();
  const r = addon.cudaOpen(gpu.library.path);
  if (!r.loaded) {
    inProcess = { ok: false, reason: r.error ?? 'the CUDA library did not load' };
  } else {
    const d = addon.cudaDeviceInfo(0);
    inProcess = d.status === 0 ? { ok: true } : { ok: false, reason: `${d.statusText} (cudaError ${d.status})` };
  }
  return inProcess.ok ? null : inProcess.reason;
}

function parseBackend(v: string, what: string): Backend {
  if (v === 'cpu' || v === 'cuda' || v === 'auto') return v;
  throw new HiermemError('E_INVALID_ARGUMENT', `${what} must be "cpu", "cuda" or "auto", got "${v}"`);
}

/**
 * The backend to run on.
 *  - 'cpu': the CPU core.
 *  - 'cuda': CUDA, or HiermemError E_BACKEND_UNAVAILABLE naming the reason.
 *  - 'auto' (default; HIERMEM_BACKEND overrides it): CUDA where the child probe found a device and
 *    the library loads here, else the CPU. Falling back prints ONE line to stderr per process —
 *    but only where an NVIDIA driver is installed: a machine without one never hears of CUDA.
 * `options.driverPresent` replaces the driver check (tests).
 */
export function resolveBackend(requested: Backend = 'auto', options: { driverPresent?: boolean } = {}): ResolvedBackend {
  let want = parseBackend(requested, 'backend');
  const env = process.env[BACKEND_ENV];
  if (want === 'auto' && env !== undefined && env !== '') want = parseBackend(env, BACKEND_ENV);
  if (want === 'cpu') return 'cpu';
  if (want === 'cuda') {
    const why = openInProcess(detectGpu());
    if (why !== null) throw new HiermemError('E_BACKEND_UNAVAILABLE', `the CUDA backend is not available: ${why}`);
    return 'cuda';
  }
  // auto
  if (!(options.driverPresent ?? nvidiaDriverPresent())) return 'cpu';
  const why = openInProcess(detectGpu());
  if (why === null) return 'cuda';
  if (!noticePrinted) {
    noticePrinted = true;
    process.stderr.write(`hiermem: no usable GPU (${why}), using the CPU backend\n`);
  }
  return 'cpu';
}

// ---- the device model ----------------------------------------------------------------------

export type GemmPrecision = 'fp32' | 'tf32' | 'bf16';
const GEMM_MODE: Record<GemmPrecision, number> = { fp32: 0, tf32: 1, bf16: 2 };

export interface CudaModelOptions extends CreateModelOptions {
  /** Dense products: 'fp32' (reference, default), 'tf32' or 'bf16' (tensor cores, fp32 accumulation). */
  gemm?: GemmPrecision;
}

/**
 * The anchor model on the GPU: parameters, gradients and AdamW state live in device memory;
 * `tensor` / `gradTensor` / `downloadParams` return host COPIES. Same config, layout, init and
 * batch contract as AnchorModel (gradients are ADDED; zeroGrad clears them).
 */
export class CudaAnchorModel {
  readonly backend = 'cuda' as const;
  readonly config: ModelConfig;
  readonly layout: readonly TensorSlot[];
  readonly maxBatch: number;
  readonly memory: { R: number; layerToMemory: Int32Array } | null;
  private native: NativeCudaModel | null;
  private readonly byName: Map<string, TensorSlot>;

  private constructor(config: ModelConfig, addon: NativeAddon, options: CudaModelOptions) {
    this.config = config;
    this.layout = addon.anchorLayout(toDims(config));
    this.byName = new Map(this.layout.map((s) => [s.name, s]));
    this.maxBatch = options.maxBatch ?? 8;
    this.memory = options.memory ?? null;
    const gemm = options.gemm ?? 'fp32';
    check(Object.hasOwn(GEMM_MODE, gemm), 'E_INVALID_ARGUMENT', `gemm must be "fp32", "tf32" or "bf16", got "${String(gemm)}"`);
    this.native = addon.createCudaAnchorModel(toDims(config), this.maxBatch, this.memory, GEMM_MODE[gemm]);
    if (this.native.paramCount !== anchorParamCount(config)) {
      this.native.dispose();
      throw new HiermemError('E_CONFIG_INVALID', `CUDA model has ${this.native.paramCount} parameters, expected ${anchorParamCount(config)}`);
    }
    if (!options.skipInit) {
      const params = new Float32Array(anchorParamCount(config));
      initAnchorParams(config, this.layout as TensorSlot[], params); // the CPU model's init, bit for bit
      this.native.uploadParams(params);
    }
  }

  /**
   * A model on the GPU with freshly initialised parameters (the same values AnchorModel.create
   * gives for this config). Throws E_BACKEND_UNAVAILABLE where CUDA cannot be used.
   */
  static create(config: Partial<ModelConfig> & { vocabSize: number }, options: CudaModelOptions = {}): CudaAnchorModel {
    const cfg = resolveModelConfig(config);
    const maxBatch = options.maxBatch ?? 8;
    check(Number.isInteger(maxBatch) && maxBatch >= 1, 'E_INVALID_ARGUMENT', `maxBatch must be a positive integer, got ${maxBatch}`);
    resolveBackend('cuda');
    return new CudaAnchorModel(cfg, loadNative(), options);
  }

  get paramCount(): number {
    return this.live().paramCount;
  }

  /** Forward + backward (gradients ADDED on the device); resolves to the mean loss. */
  async forwardBackward(batch: Batch): Promise<number> {
    return this.live().forwardBackward(toNativeBatch(batch));
  }

  /** Mean loss without gradients. */
  async loss(batch: Batch): Promise<number> {
    return this.live().forwardLoss(toNativeBatch(batch));
  }

  zeroGrad(): void {
    this.live().zeroGrad();
  }

  /** Replaces every parameter (flat buffer in layout order, e.g. an AnchorModel's params). */
  uploadParams(params: Float32Array): void {
    this.live().uploadParams(params);
  }

  downloadParams(): Float32Array {
    return this.live().downloadParams();
  }

  downloadGrads(): Float32Array {
    return this.live().downloadGrads();
  }

  /** sqrt(sum g^2) of the gradients, reduced on the device (as CudaAdamW clips by). */
  gradNorm(): number {
    return this.live().gradNorm();
  }

  /** Copies the device AdamW moments into m, v (paramCount floats each). */
  downloadAdamState(m: Float32Array, v: Float32Array): void {
    this.live().downloadAdamState(m, v);
  }

  /** Replaces the device AdamW moments (e.g. from a checkpoint). */
  uploadAdamState(m: Float32Array, v: Float32Array): void {
    this.live().uploadAdamState(m, v);
  }

  /** A host copy of one named parameter tensor. */
  tensor(name: string): Float32Array {
    const s = this.slot(name);
    return this.downloadParams().slice(s.offset, s.offset + s.size);
  }

  /** A host copy of one named gradient tensor. */
  gradTensor(name: string): Float32Array {
    const s = this.slot(name);
    return this.downloadGrads().slice(s.offset, s.offset + s.size);
  }

  /** @internal the native model (CudaAdamW drives its device AdamW state). */
  nativeModel(): NativeCudaModel {
    return this.live();
  }

  /** Frees the device memory; further calls throw E_DISPOSED. */
  dispose(): void {
    if (this.native?.busy) throw new HiermemError('E_BUSY', 'cannot dispose a model while an asynchronous call runs');
    this.native?.dispose();
    this.native = null;
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  private slot(name: string): TensorSlot {
    const s = this.byName.get(name);
    if (!s) throw new HiermemError('E_INVALID_ARGUMENT', `no parameter named "${name}"`);
    return s;
  }

  private live(): NativeCudaModel {
    if (!this.native) throw new HiermemError('E_DISPOSED', 'this model was disposed');
    return this.native;
  }
}

function toNativeBatch(b: Batch) {
  return { tokens: b.tokens, targets: b.targets, docStart: b.docStart ?? null, batchSize: b.batchSize, memory: (b.memory ?? null) as NativeMemoryBatch | null };
}

/**
 * AdamW on the device for a CudaAnchorModel (its m, v live in the model: one optimizer per model).
 * Same options, defaults, weight-decay segments and clipping rule as AdamW; the gradient norm is
 * reduced on the device. A non-finite norm rejects with E_NON_FINITE and changes nothing.
 */
export class CudaAdamW {
  readonly options: AdamWOptions;
  /** Number of updates applied so far. */
  stepCount = 0;
  private readonly segments: Float64Array;

  constructor(target: CudaAnchorModel, options: Partial<AdamWOptions> = {}) {
    this.options = resolveAdamW(options);
    this.segments = decaySegments(target.layout, this.options.weightDecay);
  }

  /**
   * One update at learning rate lr, clipped by `gradNorm` (default: the device gradients' own norm;
   * pass a joint norm when other parameters, e.g. memories, are clipped together — as AdamW.step).
   */
  async step(target: CudaAnchorModel, lr: number, gradNorm?: number): Promise<StepResult> {
    check(Number.isFinite(lr) && lr >= 0, 'E_INVALID_ARGUMENT', `learning rate must be a finite number >= 0, got ${lr}`);
    if (gradNorm !== undefined && !Number.isFinite(gradNorm)) {
      throw new HiermemError('E_NON_FINITE', `gradient norm is ${gradNorm}; update skipped`);
    }
    const o = this.options;
    const r = await target.nativeModel().adamwStep(this.segments, {
      lr, beta1: o.beta1, beta2: o.beta2, eps: o.eps, step: this.stepCount + 1, clipNorm: o.clipNorm,
      ...(gradNorm !== undefined ? { gradNorm } : {}),
    });
    this.stepCount++;
    return { gradNorm: r.gradNorm, gradScale: r.gradScale };
  }

  /** The clipping factor for a gradient norm: min(1, clipNorm / norm) (AdamW.clipScale). */
  clipScale(gradNorm: number): number {
    const clip = this.options.clipNorm;
    return clip > 0 && gradNorm > clip ? clip / gradNorm : 1;
  }

  /** Host copies of the optimizer state (m, v from the device; the step count), as AdamW holds it. */
  exportState(target: CudaAnchorModel): { m: Float32Array; v: Float32Array; stepCount: number } {
    const m = new Float32Array(target.paramCount), v = new Float32Array(target.paramCount);
    target.downloadAdamState(m, v);
    return { m, v, stepCount: this.stepCount };
  }

  /** Continues from saved state (an AdamW's m, v and step count, e.g. a checkpoint's). */
  importState(target: CudaAnchorModel, state: { m: Float32Array; v: Float32Array; stepCount: number }): void {
    check(Number.isInteger(state.stepCount) && state.stepCount >= 0, 'E_INVALID_ARGUMENT', `stepCount must be an integer >= 0, got ${state.stepCount}`);
    target.uploadAdamState(state.m, state.v);
    this.stepCount = state.stepCount;
  }
}
