/**
 * Shared pieces of the PyTorch peer benchmarks (bench/peer-check.ts, bench/peer-train.ts):
 * finding (and if asked, installing) PyTorch, driving the long-lived Python peer
 * (bench/peers/torch_model.py) over JSON lines, machine-load readings and small statistics.
 */
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { performance } from 'node:perf_hooks';
import type { TokenDecoder } from '../lib/model/anchor.js';
import { packageRoot } from '../lib/native.js';
import { Rng } from '../lib/util/random.js';
import { busyCores, machine, sleep, stat, type Stat } from './machine.js';
export { busyCores, machine, sleep, stat, type Stat };

/** Debian's python3-torch is importable only from the system interpreter (/usr/bin/python3). */
export const PYTHON = '/usr/bin/python3';
/** The OpenMP build of OpenBLAS (libopenblas0-openmp): torch's threads and BLAS's threads are one pool. */
export const OPENMP_BLAS_DIR = '/usr/lib/x86_64-linux-gnu/openblas-openmp';
export const INSTALL_COMMAND = 'apt-get install -y --no-install-recommends python3-torch libopenblas0-openmp';

export function peerScript(): string {
  return path.join(packageRoot(), 'bench', 'peers', 'torch_model.py');
}

/** Whether `/usr/bin/python3 -c "import torch"` works (quick; no install). */
export function torchImportable(): boolean {
  if (!fs.existsSync(PYTHON)) return false;
  const r = spawnSync(PYTHON, ['-c', 'import torch'], { stdio: 'ignore', timeout: 60_000 });
  return r.status === 0;
}

function openmpBlasPresent(): boolean {
  return fs.existsSync(path.join(OPENMP_BLAS_DIR, 'libopenblas.so.0'));
}

export interface PeerAvailability {
  ok: boolean;
  /** Why the peer is unavailable (ok = false), or what was installed / what is missing (ok = true). */
  message: string;
  openmpBlas: boolean;
}

/**
 * Finds PyTorch; with `install`, runs apt-get (as the issue asks) when torch or the OpenMP OpenBLAS
 * is missing. Never throws: a missing peer is a clear message and the PyTorch rows are skipped.
 */
export function ensureTorch(install: boolean): PeerAvailability {
  const notes: string[] = [];
  const apt = (): boolean => {
    if (!install) return false;
    process.stderr.write(`  installing the PyTorch peer: ${INSTALL_COMMAND}\n`);
    const args = INSTALL_COMMAND.split(' ').slice(1);
    let r = spawnSync('apt-get', args, { stdio: ['ignore', 'ignore', 'inherit'], timeout: 600_000 });
    if (r.status !== 0) {
      spawnSync('apt-get', ['update'], { stdio: ['ignore', 'ignore', 'inherit'], timeout: 300_000 });
      r = spawnSync('apt-get', args, { stdio: ['ignore', 'ignore', 'inherit'], timeout: 600_000 });
    }
    return r.status === 0;
  };
  if (!torchImportable()) {
    if (!apt() || !torchImportable()) {
      return {
        ok: false,
        openmpBlas: openmpBlasPresent(),
        message: install
          ? `PyTorch is not importable from ${PYTHON} and "${INSTALL_COMMAND}" did not fix it: PyTorch rows skipped`
          : `PyTorch is not importable from ${PYTHON} (install it with "${INSTALL_COMMAND}", or pass --install): PyTorch rows skipped`,
      };
    }
    notes.push('installed python3-torch');
  }
  if (!openmpBlasPresent()) {
    apt();
    if (!openmpBlasPresent()) {
      notes.push(`no OpenMP OpenBLAS under ${OPENMP_BLAS_DIR}: the peer runs with the default BLAS and may be oversubscribed (slower than its best)`);
    } else {
      notes.push('installed libopenblas0-openmp');
    }
  }
  return { ok: true, openmpBlas: openmpBlasPresent(), message: notes.join('; ') };
}

export interface PeerInfo {
  torch: string;
  threads: number;
  numpy: string;
  python: string;
  blas: string[];
  openmp: boolean;
  mkldnn: boolean;
}

/** Replies carry ok and either the command's fields or an error message. */
type Reply = Record<string, unknown> & { ok: boolean; error?: string };

/** The long-lived PyTorch process: one JSON request per line, one reply per line, in order. */
export class TorchPeer {
  private readonly proc: ChildProcessWithoutNullStreams;
  private readonly waiting: { resolve: (r: Reply) => void; reject: (e: Error) => void }[] = [];
  private stderrTail = '';
  private exited: string | null = null;

  private constructor(proc: ChildProcessWithoutNullStreams) {
    this.proc = proc;
    createInterface({ input: proc.stdout }).on('line', (line) => {
      const w = this.waiting.shift();
      if (!w) return;
      try {
        w.resolve(JSON.parse(line) as Reply);
      } catch {
        w.reject(new Error(`PyTorch peer sent a line that is not JSON: ${line.slice(0, 200)}`));
      }
    });
    proc.stderr.on('data', (d: Buffer) => {
      this.stderrTail = (this.stderrTail + d.toString()).slice(-4000);
    });
    proc.on('exit', (code, signal) => {
      this.exited = `PyTorch peer exited (code ${code}, signal ${signal}): ${this.stderrTail.trim().slice(-1500)}`;
      for (const w of this.waiting.splice(0)) w.reject(new Error(this.exited));
    });
  }

  /** Starts `torch_model.py --serve` with the OpenMP OpenBLAS first on the library path. */
  static async start(threads: number): Promise<{ peer: TorchPeer; info: PeerInfo }> {
    const env: NodeJS.ProcessEnv = { ...process.env, OMP_NUM_THREADS: String(threads), PYTHONUNBUFFERED: '1' };
    if (openmpBlasPresent()) env.LD_LIBRARY_PATH = [OPENMP_BLAS_DIR, process.env.LD_LIBRARY_PATH].filter(Boolean).join(':');
    delete env.OPENBLAS_NUM_THREADS;
    const proc = spawn(PYTHON, [peerScript(), '--serve'], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    const peer = new TorchPeer(proc);
    const info = (await peer.request({ cmd: 'hello', threads })) as unknown as PeerInfo;
    return { peer, info };
  }

  /** Sends one request; rejects with the peer's error message if it failed. */
  request(req: Record<string, unknown>): Promise<Reply> {
    if (this.exited) return Promise.reject(new Error(this.exited));
    return new Promise<Reply>((resolve, reject) => {
      this.waiting.push({
        resolve: (r) => (r.ok ? resolve(r) : reject(new Error(`PyTorch peer, ${String(req.cmd)}: ${r.error ?? 'failed'}`))),
        reject,
      });
      this.proc.stdin.write(JSON.stringify(req) + '\n');
    });
  }

  close(): void {
    if (this.exited) return;
    this.proc.stdin.end();
    const t = setTimeout(() => this.proc.kill('SIGKILL'), 5000);
    t.unref();
  }
}

// ---- statistics --------------------------------------------------------------------------------

/** max |a - b| / max |b| over two equally long arrays ("max-norm relative" difference). */
export function maxRel(a: ArrayLike<number>, b: ArrayLike<number>): { rel: number; maxAbs: number; scale: number } {
  if (a.length !== b.length) throw new Error(`length mismatch ${a.length} vs ${b.length}`);
  let d = 0;
  let s = 0;
  for (let i = 0; i < a.length; i++) {
    d = Math.max(d, Math.abs(a[i]! - b[i]!));
    s = Math.max(s, Math.abs(b[i]!));
  }
  return { rel: s > 0 ? d / s : d === 0 ? 0 : Infinity, maxAbs: d, scale: s };
}

// ---- machine load ------------------------------------------------------------------------------

/**
 * Waits (up to maxS seconds, and within a shared budget for the whole run) until other processes
 * use < 0.25 cores; returns the last reading.
 */
export class IdleWaiter {
  private budgetMs: number;
  constructor(private readonly maxS: number, budgetS: number) {
    this.budgetMs = budgetS * 1000;
  }
  async wait(what: string): Promise<number> {
    const t0 = Date.now();
    const deadline = t0 + Math.min(this.maxS * 1000, this.budgetMs);
    let busy = await busyCores(700);
    let warned = false;
    while (busy >= 0.25 && Date.now() < deadline) {
      if (!warned) process.stderr.write(`  (machine busy: ${busy.toFixed(2)} cores used by others; waiting before ${what})\n`);
      warned = true;
      busy = await busyCores(1500);
    }
    this.budgetMs = Math.max(0, this.budgetMs - (Date.now() - t0));
    if (busy >= 0.25) process.stderr.write(`  (still busy, ${busy.toFixed(2)} cores: measuring ${what} anyway)\n`);
    return busy;
  }
}

// ---- batches -------------------------------------------------------------------------------------

/** B tree paths of a k-ary tree with `levels` levels: `distinct` different ones, sorted (shared paths adjacent). */
export function treePaths(rng: Rng, B: number, k: number, levels: number, distinct: number): Int32Array {
  const uniq: number[][] = [];
  const seen = new Set<string>();
  while (uniq.length < distinct) {
    const p: number[] = [];
    let node = 0;
    for (let l = 0; l < levels; l++) {
      node = (l === 0 ? 0 : node * k) + rng.int(k);
      p.push(node);
    }
    if (seen.has(p.join(',')) && seen.size < Math.pow(k, levels)) continue;
    seen.add(p.join(','));
    uniq.push(p);
  }
  uniq.sort((a, b) => a.join(',').localeCompare(b.join(',')));
  const out = new Int32Array(B * levels);
  for (let b = 0; b < B; b++) out.set(uniq[Math.floor((b * distinct) / B)]!, b * levels);
  return out;
}

/** Index of the largest logit (greedy decoding; the first on ties, as torch.argmax). */
export function argmax(l: Float32Array): number {
  let b = 0;
  for (let i = 1; i < l.length; i++) if (l[i]! > l[b]!) b = i;
  return b;
}

/**
 * Our side of a generation row, timed as the PyTorch peers time theirs: the cache and the prompt's
 * forward happen before the clock starts; the timed part is G single-token greedy steps (the caller
 * keeps promptLen + G <= seqLen, so the cache never fills). Repeated n times; the last tokens are
 * returned for the agreement check against the peer.
 */
export function timeGreedyDecode(newDecoder: () => TokenDecoder, prompt: Int32Array, G: number, n: number): { ms: number; cpuMs: number; tokens: number[] } {
  let ms = 0;
  let cpuMs = 0;
  let tokens: number[] = [];
  for (let c = 0; c < n; c++) {
    const dec = newDecoder();
    let tok = argmax(dec.prefill(prompt));
    const out: number[] = [];
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    for (let i = 0; i < G; i++) {
      out.push(tok);
      tok = argmax(dec.step(tok));
    }
    ms += performance.now() - t0;
    const cu = process.cpuUsage(c0);
    cpuMs += (cu.user + cu.system) / 1e3;
    tokens = out;
  }
  return { ms, cpuMs, tokens };
}
