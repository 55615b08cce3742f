/**
 * Loads the native addon once, and wraps it so that the addon's "[E_CODE] message" errors surface
 * as typed HiermemErrors. Search order: HIERMEM_ADDON_PATH; a source build of this package
 * (build/Release); the platform package (@hiermem/<platform>-<arch>, an optional dependency holding
 * the prebuild); node-gyp-build's search (build/Release, then prebuilds/<platform>-<arch>).
 */
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { existsSync, statSync } from 'node:fs';
import { HiermemError, fromNativeError } from './errors.js';
import type { NativeAddon } from './native-types.js';

const require = createRequire(import.meta.url);

/** The package root: dist/lib/native.js -> ../.. (also works from lib/ under tsx). */
export function packageRoot(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  return path.basename(path.dirname(here)) === 'dist' ? path.resolve(here, '../..') : path.resolve(here, '..');
}

/** Where the loaded addon came from. */
export type NativeAddonSource = 'env' | 'platform-package' | 'local-build' | 'prebuild';

/** The npm package holding this platform's CPU prebuild (an optional dependency). */
export const PLATFORM_PACKAGE = `@hiermem/${process.platform}-${process.arch}`;
/** The npm package holding this platform's CUDA library (an optional dependency). */
export const CUDA_PLATFORM_PACKAGE = `${PLATFORM_PACKAGE}-cuda`;
/** Platforms for which platform packages are published. */
export const PREBUILT_PLATFORMS: readonly string[] = ['linux-x64'];
/** The addon's file name, in build/Release and in the platform package. */
export const ADDON_FILE = 'hiermem.node';

let cached: NativeAddon | undefined;
/** The file the addon was loaded from (the CUDA library is looked for beside it). */
let cachedPath: string | null = null;
let cachedSource: NativeAddonSource | null = null;

/** A place the loader looked, and why nothing usable was there. */
interface Attempt {
  where: string;
  error: string;
  cause?: unknown;
}

/** The first line of an error's message, without a leading "<file>: " (Node's dlopen errors repeat the path). */
function firstLine(e: unknown, file?: string): string {
  const line = (e instanceof Error ? e.message : String(e)).split('\n')[0]!.trim();
  return file !== undefined && line.startsWith(`${file}: `) ? line.slice(file.length + 2) : line;
}

/**
 * The directory of package `name` as resolved from this package's root (so npm's hoisting and
 * nesting both work), or null when it is not installed. Other failures (a broken package.json)
 * come back as an Attempt: the package is there but cannot be used.
 */
export function resolvePackageDir(name: string, root: string = packageRoot()): string | null {
  return resolvePackage(name, root).dir;
}

function resolvePackage(name: string, root: string): { dir: string | null; failure?: Attempt } {
  try {
    const fromRoot = createRequire(path.join(root, 'package.json'));
    return { dir: path.dirname(fromRoot.resolve(`${name}/package.json`)) };
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'MODULE_NOT_FOUND') return { dir: null };
    return { dir: null, failure: { where: name, error: firstLine(e), cause: e } };
  }
}

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
    cachedSource = 'env';
    return addon;
  } catch (e) {
    return bad(`cannot load it: ${(e as Error).message}`, e);
  }
}

/** Loads `file` and records where it came from; a failure is added to `tried` and gives undefined. */
function tryLoad(file: string, source: NativeAddonSource, tried: Attempt[]): NativeAddon | undefined {
  try {
    const addon = require(file) as NativeAddon;
    cachedPath = file;
    cachedSource = source;
    return addon;
  } catch (e) {
    tried.push({ where: file, error: firstLine(e, file), cause: e });
    return undefined;
  }
}

/**
 * The platform package's prebuild. Not installed: undefined, silently. Installed but not loadable
 * (wrong glibc, truncated download): undefined too, with the reason added to `tried`, so that a
 * local build can still take over and a final error can say what went wrong.
 */
function addonFromPlatformPackage(root: string, tried: Attempt[]): NativeAddon | undefined {
  const { dir, failure } = resolvePackage(PLATFORM_PACKAGE, root);
  if (failure) tried.push(failure);
  else if (dir === null && PREBUILT_PLATFORMS.includes(`${process.platform}-${process.arch}`)) {
    tried.push({ where: PLATFORM_PACKAGE, error: 'not installed' }); // only reported if nothing else loads
  }
  return dir === null ? undefined : tryLoad(path.join(dir, ADDON_FILE), 'platform-package', tried);
}

/**
 * A source build of this package (build/Release), taken before the platform package: it exists
 * only where someone built from source on purpose (the install script when no prebuild loaded, or
 * a developer), and a published prebuild must never shadow the code just compiled.
 */
function addonFromLocalBuild(root: string, tried: Attempt[]): NativeAddon | undefined {
  const file = path.join(root, 'build', 'Release', ADDON_FILE);
  return existsSync(file) ? tryLoad(file, 'local-build', tried) : undefined;
}

/** node-gyp-build's search of this package (build/Release, prebuilds/<platform>-<arch>); throws with every place tried. */
function addonFromPackage(root: string, tried: Attempt[]): NativeAddon {
  const nodeGypBuild = require('node-gyp-build') as { path(dir: string): string };
  let file: string | null = null;
  try {
    file = nodeGypBuild.path(root); // the same search node-gyp-build(root) does, keeping the path
  } catch (e) {
    const platformDir = `${process.platform}-${process.arch}`;
    const where = `${path.join(root, 'build', 'Release', ADDON_FILE)} or ${path.join(root, 'prebuilds', platformDir) + path.sep}`;
    tried.push({ where, error: firstLine(e), cause: e });
  }
  // a local build that failed to load above is not tried (or reported) twice
  if (file !== null && !tried.some((t) => t.where === file)) {
    const addon = tryLoad(file, file.split(path.sep).includes('prebuilds') ? 'prebuild' : 'local-build', tried);
    if (addon) return addon;
  }
  throw unavailable(tried);
}

function unavailable(tried: Attempt[]): HiermemError {
  const platform = `${process.platform}-${process.arch}`;
  const hasPackage = PREBUILT_PLATFORMS.includes(platform);
  const lines = tried.map((t, i) => `  ${i + 1}. ${t.where}: ${t.error}`);
  const hint = hasPackage
    ? `Reinstall with optional dependencies (the prebuild ships in ${PLATFORM_PACKAGE}; --omit=optional or ` +
      `--no-optional leave it out), or build from source: install cmake and g++, then run "npm rebuild hiermem"`
    : `No prebuild is published for ${platform}: install cmake and g++, then run "npm rebuild hiermem" to build from source`;
  return new HiermemError(
    'E_NATIVE_UNAVAILABLE',
    `no loadable hiermem native addon for ${platform} (node ${process.versions.node}, N-API ${process.versions.napi}). ` +
      `Tried:\n${lines.join('\n')}\n${hint}.`,
    { cause: [...tried].reverse().find((t) => t.cause !== undefined)?.cause },
  );
}

/** The CPU addon. Throws HiermemError('E_NATIVE_UNAVAILABLE') with the platform named if none loads. */
export function loadNative(): NativeAddon {
  if (cached) return cached;
  const root = packageRoot();
  const tried: Attempt[] = [];
  const raw: NativeAddon =
    addonFromEnv() ?? addonFromLocalBuild(root, tried) ?? addonFromPlatformPackage(root, tried) ?? addonFromPackage(root, tried);
  cached = wrapErrors(raw);
  const threads = Number(process.env.HIERMEM_THREADS ?? '');
  if (Number.isInteger(threads) && threads > 0) cached.setNumThreads(threads);
  return cached;
}

/**
 * Absolute path of the addon file that loadNative() loaded (loading it if needed): HIERMEM_ADDON_PATH,
 * node_modules/@hiermem/<platform>-<arch>/hiermem.node, build/Release/hiermem.node or
 * prebuilds/<platform>-<arch>/hiermem.node. null where the loader could not tell.
 */
export function nativeAddonPath(): string | null {
  loadNative();
  return cachedPath;
}

/** Which of the loader's sources nativeAddonPath() came from (loading the addon if needed). */
export function nativeAddonSource(): NativeAddonSource | null {
  loadNative();
  return cachedSource;
}
