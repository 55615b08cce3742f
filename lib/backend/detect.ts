/**
 * Which backend runs (issue #8): the native CPU core, or CUDA through hiermem_cuda.so.
 *
 * The CUDA library is HIERMEM_CUDA_LIB, else the one beside the loaded addon (build/Release/,
 * prebuilds/<platform>-<arch>/ or the platform package), else the one in the CUDA platform package
 * (@hiermem/<platform>-<arch>-cuda, an optional dependency). It is probed in a CHILD process first (load + device query), so that a
 * broken driver can only take the child down; only a library that answered there is opened in
 * this process. Nothing here ever prints on a machine without an NVIDIA driver.
 *
 * What runs where is decided once, by createAnchorRunner (lib/backend/runner.ts), from the answer
 * of resolveBackend here.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { HiermemError } from '../errors.js';
import { CUDA_PLATFORM_PACKAGE, loadNative, nativeAddonPath, resolvePackageDir } from '../native.js';
import type { CudaDeviceInfo, NativeAddon } from '../native-types.js';

export type Backend = 'cpu' | 'cuda' | 'auto';
export type ResolvedBackend = 'cpu' | 'cuda';

/**
 * The backend a run gets unless it asks for another: 'cpu', not 'auto', for now — the CUDA kernels
 * are checked against their CPU twins and through a fake library, but have not yet run on a real
 * GPU, so a GPU must be asked for (backend 'cuda' or 'auto', CLI --backend) until they have.
 */
export const DEFAULT_BACKEND: Backend = 'cpu';

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
