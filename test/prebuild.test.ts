/**
 * The shipped addon must load on a machine without any BLAS, libgfortran, libgomp or libstdc++
 * (it links no BLAS — the GEMM is our own — and the C++ runtime with -static-libstdc++ -static-libgcc).
 *
 * This file builds nothing. It checks the addon node-gyp-build would load (build/Release/… or
 * prebuilds/<platform>-<arch>/…), plus any prebuild that sits in prebuilds/ (what npm ships):
 *  (a) its ELF dynamic section (read here in JS: no tool runs, nothing is executed) NEEDs only
 *      glibc libraries, and `readelf -d`, where installed, agrees with that reading;
 *  (b) a copy of it, alone in a temp dir, loads in a child node with LD_LIBRARY_PATH pointing at
 *      an empty dir, runs matmulNT products (our GEMM) correctly against a float64 JS reference
 *      (1 and 2 threads), and no BLAS/Fortran/OpenMP library is mapped into that process;
 *  (c) where we may create a mount namespace (root + unshare), the same child runs with every
 *      directory/file that provides libopenblas/libblas hidden under an empty tmpfs, and first
 *      proves they are hidden (dlopen of libopenblas.so.0 fails there). Skipped otherwise.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { packageRoot } from '../lib/native.js';

const require = createRequire(import.meta.url);

/** Sonames a self-contained addon may need: glibc's own libraries and the dynamic loader. */
const ALLOWED_NEEDED = /^(libc\.so\.6|libm\.so\.6|libpthread\.so\.0|libdl\.so\.2|librt\.so\.1|ld-linux-x86-64\.so\.2|ld-linux-aarch64\.so\.1)$/;
/** Libraries the addon must not depend on (the point of the static build). */
const FORBIDDEN = /(openblas|libblas|cblas|lapack|gfortran|quadmath|libstdc\+\+|libgcc_s|libgomp)/i;
/** Libraries that must not be mapped into a process that loaded only node + the addon. */
const FORBIDDEN_MAPPED = /(openblas|libblas|cblas|lapack|gfortran|libgomp)/i;

// ---- a minimal ELF64 (little-endian) dynamic-section reader ---------------------------------

interface DynamicInfo {
  needed: string[];
  soname: string | null;
  runpath: string[];
}

const DT_NULL = 0n;
const DT_NEEDED = 1n;
const DT_STRTAB = 5n;
const DT_SONAME = 14n;
const DT_RPATH = 15n;
const DT_RUNPATH = 29n;
const PT_LOAD = 1;
const PT_DYNAMIC = 2;

/** Reads DT_NEEDED / DT_SONAME / DT_RPATH|RUNPATH through the program headers (works on stripped files). */
function readElfDynamic(file: string): DynamicInfo {
  const buf = fs.readFileSync(file);
  assert.ok(buf.length >= 64 && buf.readUInt32BE(0) === 0x7f454c46, `${file} is not an ELF file`);
  assert.equal(buf[4], 2, `${file}: not ELF64`);
  assert.equal(buf[5], 1, `${file}: not little-endian`);
  const phoff = Number(buf.readBigUInt64LE(0x20));
  const phentsize = buf.readUInt16LE(0x36);
  const phnum = buf.readUInt16LE(0x38);
  const loads: { vaddr: bigint; offset: bigint; filesz: bigint }[] = [];
  let dyn: { offset: number; size: number } | null = null;
  for (let i = 0; i < phnum; i++) {
    const p = phoff + i * phentsize;
    const type = buf.readUInt32LE(p);
    const offset = buf.readBigUInt64LE(p + 8);
    const vaddr = buf.readBigUInt64LE(p + 16);
    const filesz = buf.readBigUInt64LE(p + 32);
    if (type === PT_LOAD) loads.push({ vaddr, offset, filesz });
    if (type === PT_DYNAMIC) dyn = { offset: Number(offset), size: Number(filesz) };
  }
  assert.ok(dyn, `${file}: no PT_DYNAMIC segment (a static executable, not a shared object?)`);
  const toOffset = (addr: bigint): number => {
    const seg = loads.find((l) => addr >= l.vaddr && addr < l.vaddr + l.filesz);
    assert.ok(seg, `${file}: address 0x${addr.toString(16)} is in no PT_LOAD segment`);
    return Number(addr - seg.vaddr + seg.offset);
  };
  const entries: [bigint, bigint][] = [];
  let strtab = -1n;
  for (let p = dyn.offset; p + 16 <= dyn.offset + dyn.size; p += 16) {
    const tag = buf.readBigInt64LE(p);
    const val = buf.readBigUInt64LE(p + 8);
    if (tag === DT_NULL) break;
    if (tag === DT_STRTAB) strtab = val;
    entries.push([tag, val]);
  }
  assert.ok(strtab >= 0n, `${file}: no DT_STRTAB`);
  const strOff = toOffset(strtab);
  const str = (i: bigint): string => {
    const start = strOff + Number(i);
    const end = buf.indexOf(0, start);
    return buf.toString('latin1', start, end);
  };
  const info: DynamicInfo = { needed: [], soname: null, runpath: [] };
  for (const [tag, val] of entries) {
    if (tag === DT_NEEDED) info.needed.push(str(val));
    else if (tag === DT_SONAME) info.soname = str(val);
    else if (tag === DT_RPATH || tag === DT_RUNPATH) info.runpath.push(...str(val).split(':'));
  }
  return info;
}

/** NEEDED entries as `readelf -d` prints them, or null when readelf is not installed. */
function readelfNeeded(file: string): string[] | null {
  const r = spawnSync('readelf', ['-d', '-W', file], { encoding: 'utf8' });
  if (r.error || r.status !== 0) return null;
  return [...r.stdout.matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)].map((m) => m[1]!);
}

// ---- which addons to check ------------------------------------------------------------------

function addonsUnderTest(): string[] {
  const root = packageRoot();
  const nodeGypBuild = require('node-gyp-build') as { path(dir: string): string };
  const found = new Set<string>([nodeGypBuild.path(root)]); // throws (fails the test) if there is none
  const pre = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`);
  if (fs.existsSync(pre)) {
    for (const f of fs.readdirSync(pre)) if (f.endsWith('.node')) found.add(path.join(pre, f));
  }
  return [...found];
}

// ---- the child process ----------------------------------------------------------------------

/** Runs in a fresh node: loads the addon by absolute path, checks matmulNT, reports the process's mappings. */
const CHILD_SOURCE = String.raw`
'use strict';
const fs = require('fs');
const os = require('os');
const addonPath = process.argv[2];
const probes = process.argv.slice(3);
const out = { ok: false };
try {
  const mod = { exports: {} };
  process.dlopen(mod, addonPath, os.constants.dlopen.RTLD_NOW);
  const addon = mod.exports;
  out.blas = addon.blas;
  let seed = 12345;
  const rnd = () => { seed = (Math.imul(seed, 1103515245) + 12345) >>> 0; return seed / 4294967296 - 0.5; };
  const fill = (n) => { const a = new Float32Array(n); for (let i = 0; i < n; i++) a[i] = rnd(); return a; };
  out.products = [];
  for (const [threads, M, N, K] of [[1, 64, 64, 64], [1, 67, 33, 129], [2, 256, 192, 320]]) {
    addon.setNumThreads(threads);
    const a = fill(M * K), b = fill(N * K), c = new Float32Array(M * N).fill(999);
    addon.matmulNT(c, a, b, M, N, K);
    let maxRef = 0, maxDiff = 0;
    for (let i = 0; i < M; i++) for (let j = 0; j < N; j++) {
      let s = 0;
      for (let k = 0; k < K; k++) s += a[i * K + k] * b[j * K + k];
      maxRef = Math.max(maxRef, Math.abs(s));
      const d = Math.abs(c[i * N + j] - s);
      maxDiff = Number.isNaN(d) ? Infinity : Math.max(maxDiff, d);
    }
    out.products.push({ threads, M, N, K, relErr: maxDiff / (maxRef + 1e-6) });
  }
  out.mapped = [...new Set(fs.readFileSync('/proc/self/maps', 'utf8').split('\n')
    .map((l) => l.trim().split(/\s+/)[5]).filter((p) => p && p.startsWith('/')))];
  // Last (it would map the library if it were found): can the dynamic loader find BLAS at all here?
  out.probes = probes.map((name) => {
    try { process.dlopen({ exports: {} }, name); return { name, found: true }; }
    catch (e) { return { name, found: !/cannot open shared object file|No such file|file too short|invalid ELF header/.test(e.message), error: e.message }; }
  });
  out.ok = true;
} catch (e) {
  out.error = String(e && e.stack || e);
}
process.stdout.write(JSON.stringify(out));
`;

interface ChildReport {
  ok: boolean;
  error?: string;
  blas?: string;
  products?: { threads: number; M: number; N: number; K: number; relErr: number }[];
  mapped?: string[];
  probes?: { name: string; found: boolean; error?: string }[];
}

const BLAS_SONAMES = ['libopenblas.so.0', 'libblas.so.3'];
const tmpDirs: string[] = [];

function makeSandbox(addon: string): { dir: string; addonCopy: string; script: string; emptyLib: string } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hiermem-prebuild-'));
  tmpDirs.push(dir);
  const addonCopy = path.join(dir, 'hiermem.node');
  fs.copyFileSync(addon, addonCopy);
  const script = path.join(dir, 'child.cjs');
  fs.writeFileSync(script, CHILD_SOURCE);
  const emptyLib = path.join(dir, 'empty-lib');
  fs.mkdirSync(emptyLib);
  return { dir, addonCopy, script, emptyLib };
}

function childEnv(emptyLib: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, LD_LIBRARY_PATH: emptyLib };
  delete env.LD_PRELOAD;
  delete env.NODE_OPTIONS;
  delete env.HIERMEM_THREADS;
  return env;
}

function parseChild(r: ReturnType<typeof spawnSync>, label: string): ChildReport {
  assert.equal(r.error, undefined, `${label}: could not start the child: ${String(r.error)}`);
  const stdout = String(r.stdout ?? '');
  assert.equal(r.status, 0, `${label}: child exited with ${r.status} (signal ${r.signal}); stderr:\n${String(r.stderr ?? '')}`);
  let rep: ChildReport;
  try {
    rep = JSON.parse(stdout) as ChildReport;
  } catch {
    assert.fail(`${label}: child printed no JSON report: ${stdout}\nstderr:\n${String(r.stderr ?? '')}`);
  }
  assert.ok(rep.ok, `${label}: child failed: ${rep.error}`);
  return rep;
}

function checkChildReport(rep: ChildReport, label: string): void {
  assert.ok(rep.products && rep.products.length === 3, `${label}: missing matmul results`);
  for (const p of rep.products) {
    assert.ok(p.relErr <= 1e-5, `${label}: matmulNT ${p.M}x${p.N}x${p.K} (${p.threads} thread(s)) rel err ${p.relErr}`);
  }
  const bad = (rep.mapped ?? []).filter((m) => FORBIDDEN_MAPPED.test(path.basename(m)));
  assert.deepEqual(bad, [], `${label}: BLAS/Fortran/OpenMP libraries mapped into the process: ${bad.join(', ')}`);
  assert.ok((rep.mapped ?? []).some((m) => m.endsWith('hiermem.node')), `${label}: the addon copy is not in /proc/self/maps`);
}

/**
 * Where libopenblas / libblas live on this machine (resolved through symlinks and alternatives):
 * directories to hide whole when they hold only BLAS builds, single files when they sit beside libc.
 */
function blasLocations(): { dirs: string[]; files: string[] } {
  const candidates = new Set<string>();
  const ldconfig = spawnSync('ldconfig', ['-p'], { encoding: 'utf8' });
  if (!ldconfig.error && ldconfig.status === 0) {
    for (const m of ldconfig.stdout.matchAll(/^\s*(lib(?:open)?blas[^\s]*\.so[^\s]*)\s.*=>\s*(\S+)\s*$/gm)) candidates.add(m[2]!);
  }
  for (const d of ['/usr/lib/x86_64-linux-gnu', '/usr/lib/aarch64-linux-gnu', '/usr/lib64', '/usr/lib', '/usr/local/lib']) {
    for (const so of BLAS_SONAMES) candidates.add(path.join(d, so));
  }
  const dirs = new Set<string>();
  const files = new Set<string>();
  for (const c of candidates) {
    let real: string;
    try {
      real = fs.realpathSync(c);
    } catch {
      continue; // dangling or absent
    }
    const dir = path.dirname(real);
    if (fs.existsSync(path.join(dir, 'libc.so.6'))) files.add(real);
    else dirs.add(dir);
  }
  return { dirs: [...dirs], files: [...files] };
}

const shq = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;

/** True where we may make a private mount namespace and mount a tmpfs in it (root, no seccomp/caps block). */
function canUnshareMounts(): boolean {
  if (process.platform !== 'linux' || typeof process.getuid !== 'function' || process.getuid() !== 0) return false;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hiermem-unshare-probe-'));
  try {
    const r = spawnSync('unshare', ['-m', '--propagation', 'private', 'sh', '-c', `mount -t tmpfs -o size=4k hiermem-probe ${shq(dir)}`], {
      encoding: 'utf8',
    });
    return !r.error && r.status === 0;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

// ---- the tests ------------------------------------------------------------------------------

const isLinuxElf64 = process.platform === 'linux' && (process.arch === 'x64' || process.arch === 'arm64');

describe('self-contained native addon (no BLAS, static libstdc++)', { skip: isLinuxElf64 ? false : 'Linux-only checks' }, () => {
  after(() => {
    for (const d of tmpDirs) fs.rmSync(d, { recursive: true, force: true });
  });

  const addons = isLinuxElf64 ? addonsUnderTest() : [];

  for (const addon of addons) {
    const label = path.relative(packageRoot(), addon);

    test(`${label}: NEEDs only glibc (no BLAS, Fortran, OpenMP or C++ runtime)`, () => {
      const info = readElfDynamic(addon);
      assert.ok(info.needed.includes('libc.so.6'), `${label}: NEEDED ${JSON.stringify(info.needed)} lacks libc.so.6 (parser bug?)`);
      const forbidden = info.needed.filter((n) => FORBIDDEN.test(n));
      assert.deepEqual(forbidden, [], `${label}: forbidden dependencies ${forbidden.join(', ')}`);
      const unexpected = info.needed.filter((n) => !ALLOWED_NEEDED.test(n));
      assert.deepEqual(unexpected, [], `${label}: dependencies beyond glibc: ${unexpected.join(', ')}`);
      const viaReadelf = readelfNeeded(addon);
      if (viaReadelf !== null) {
        assert.deepEqual([...viaReadelf].sort(), [...info.needed].sort(), `${label}: readelf disagrees with the ELF reader`);
      }
    });

    test(`${label}: a lone copy loads and runs matmulNT with LD_LIBRARY_PATH on an empty dir`, () => {
      const sb = makeSandbox(addon);
      const r = spawnSync(process.execPath, [sb.script, sb.addonCopy], {
        cwd: sb.dir,
        env: childEnv(sb.emptyLib),
        encoding: 'utf8',
        timeout: 60_000,
      });
      const rep = parseChild(r, label);
      checkChildReport(rep, label);
    });

    const unshareOk = canUnshareMounts();
    test(
      `${label}: runs with libopenblas/libblas hidden by a private mount namespace`,
      { skip: unshareOk ? false : 'needs root and unshare -m (mount namespaces)' },
      (t) => {
        const { dirs, files } = blasLocations();
        if (dirs.length === 0 && files.length === 0) {
          t.skip('no libopenblas/libblas installed here: nothing to hide (the unhidden run above already covers this case)');
          return;
        }
        const sb = makeSandbox(addon);
        const hide = [
          ...dirs.map((d) => `mount -t tmpfs -o ro,size=4k hiermem-hide ${shq(d)}`),
          ...files.map((f) => `mount --bind ${shq(path.join(sb.emptyLib, 'empty'))} ${shq(f)}`),
        ];
        fs.writeFileSync(path.join(sb.emptyLib, 'empty'), '');
        const cmd = `set -e; ${hide.join('; ')}; exec ${shq(process.execPath)} ${shq(sb.script)} ${shq(sb.addonCopy)} ${BLAS_SONAMES.map(shq).join(' ')}`;
        const r = spawnSync('unshare', ['-m', '--propagation', 'private', 'sh', '-c', cmd], {
          cwd: sb.dir,
          env: childEnv(sb.emptyLib),
          encoding: 'utf8',
          timeout: 60_000,
        });
        const rep = parseChild(r, `${label} (BLAS hidden)`);
        for (const p of rep.probes ?? []) {
          assert.equal(p.found, false, `${label}: ${p.name} was still loadable inside the namespace (${p.error ?? 'loaded'}): hiding failed`);
        }
        checkChildReport(rep, `${label} (BLAS hidden)`);
      },
    );
  }
});
