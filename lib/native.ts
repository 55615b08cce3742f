/**
 * Loads the native addon (prebuild or local build, found by node-gyp-build) once, and wraps it so
 * that the addon's "[E_CODE] message" errors surface as typed HiermemErrors.
 */
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { statSync } from 'node:fs';
import { HiermemError, fromNativeError } from './errors.js';
import type { NativeAddon } from './native-types.js';

const require = createRequire(import.meta.url);

/** The package root: dist/lib/native.js -> ../.. (also works from lib/ under tsx). */
export function packageRoot(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  return path.basename(path.dirname(here)) === 'dist' ? path.resolve(here, '../..') : path.resolve(here, '..');
}

let cached: NativeAddon | undefined;
/** The file the addon was loaded from (the CUDA library is looked for beside it). */
let cachedPath: string | null = null;

function wrapErrors<T extends object>(target: T): T {
  return new Proxy(target, {
    get(obj, key) {
      let value: unknown;
      try {
        value = Reflect.get(obj, key); // native getters (e.g. bank.bytes) can throw too
      } catch (e) {
        throw fromNativeError(e);
      }
      if (typeof value !== 'function') return value;
      return function (this: unknown, ...args: unknown[]) {
        try {
          const out: unknown = (value as (...a: unknown[]) => unknown).apply(obj, args);
          if (out instanceof Promise) return out.catch((e: unknown) => { throw fromNativeError(e); });
          // objects created by the addon (models) get the same error mapping
          if (out !== null && typeof out === 'object' && !ArrayBuffer.isView(out) && !Array.isArray(out)) {
            return wrapErrors(out);
          }
          return out;
        } catch (e) {
          throw fromNativeError(e);
        }
      };
    },
  });
}

/**
 * HIERMEM_ADDON_PATH: load this addon file instead of the prebuild / local build (e.g. the
 * AddressSanitizer build of `npm run test:asan`). It must be an absolute path to an existing
 * regular `.node` file; anything else → E_NATIVE_UNAVAILABLE, never a silent fallback.
 */
export const ADDON_PATH_ENV = 'HIERMEM_ADDON_PATH';

function addonFromEnv(): NativeAddon | undefined {
  const file = process.env[ADDON_PATH_ENV];
  if (file === undefined || file === '') return undefined;
  const bad = (why: string, cause?: unknown): never => {
    throw new HiermemError('E_NATIVE_UNAVAILABLE', `${ADDON_PATH_ENV}=${file}: ${why}`, cause === undefined ? undefined : { cause });
  };
  if (!path.isAbsolute(file) || path.extname(file) !== '.node') bad('must be an absolute path to a .node file');
  let isFile = false;
  try {
    isFile = statSync(file).isFile();
  } catch (e) {
    bad(`cannot stat it: ${(e as Error).message}`, e);
  }
  if (!isFile) bad('not a regular file');
  try {
    const addon = require(file) as NativeAddon;
    cachedPath = file;
    return addon;
  } catch (e) {
    return bad(`cannot load it: ${(e as Error).message}`, e);
  }
}

/** The prebuild matching this platform, or the local build (node-gyp-build's search). */
function addonFromPackage(root: string): NativeAddon {
  try {
    const nodeGypBuild = require('node-gyp-build') as ((dir: string) => unknown) & { path?: (dir: string) => string };
    if (typeof nodeGypBuild.path !== 'function') return nodeGypBuild(root) as NativeAddon;
    const file = nodeGypBuild.path(root); // the same search node-gyp-build(root) does, keeping the path
    const addon = require(file) as NativeAddon;
    cachedPath = file;
    return addon;
  } catch (e) {
    throw new HiermemError(
      'E_NATIVE_UNAVAILABLE',
      `no hiermem native addon for ${process.platform}-${process.arch} (node ${process.versions.node}, ` +
        `N-API ${process.versions.napi}) under ${root}: install build tools (cmake, g++, libopenblas-dev) and run ` +
        `"npm rebuild hiermem", or use a platform with a prebuild (linux-x64). Cause: ${(e as Error).message}`,
      { cause: e },
    );
  }
}

/** The CPU addon. Throws HiermemError('E_NATIVE_UNAVAILABLE') with the platform named if none loads. */
export function loadNative(): NativeAddon {
  if (cached) return cached;
  const root = packageRoot();
  const raw: NativeAddon = addonFromEnv() ?? addonFromPackage(root);
  cached = wrapErrors(raw);
  const threads = Number(process.env.HIERMEM_THREADS ?? '');
  if (Number.isInteger(threads) && threads > 0) cached.setNumThreads(threads);
  return cached;
}

/**
 * Absolute path of the addon file that loadNative() loaded (loading it if needed): build/Release/
 * hiermem.node, prebuilds/<platform>-<arch>/hiermem.node or HIERMEM_ADDON_PATH. null where the
 * loader could not tell (a runtime with its own native resolver).
 */
export function nativeAddonPath(): string | null {
  loadNative();
  return cachedPath;
}
