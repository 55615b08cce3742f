/**
 * The Communicator over MPI (issue #14). The addon opens the MPI library with dlopen, so nothing
 * changes on a machine without MPI until a run asks for it; then this fails with
 * E_BACKEND_UNAVAILABLE naming the package to install. HIERMEM_MPI_LIB picks a library file.
 *
 * Every collective is awaited before the next is issued (the addon refuses two in flight), and a
 * watchdog ends the job with MPI_Abort when one takes longer than the timeout: a rank that died or
 * hangs must take the job down with an error, never leave its peers waiting forever.
 */
import { HiermemError } from '../errors.js';
import { loadNative } from '../native.js';
import type { CommStats, Communicator } from './communicator.js';

/** Path of the MPI library to open instead of libmpi.so.40 / libmpi.so.12. */
export const MPI_LIB_ENV = 'HIERMEM_MPI_LIB';
/** Seconds a collective may take before the job is aborted (0: no limit). */
export const DIST_TIMEOUT_ENV = 'HIERMEM_DIST_TIMEOUT_S';
export const DEFAULT_DIST_TIMEOUT_S = 600;
/** The libraries tried without HIERMEM_MPI_LIB: Open MPI's ABI, then MPICH's (MPICH, Intel MPI, MVAPICH). */
export const MPI_LIB_CANDIDATES: readonly string[] = ['libmpi.so.40', 'libmpi.so.12'];
/** What to install where no MPI library opens (Debian / Ubuntu). */
export const MPI_PACKAGE = 'openmpi-bin';

/** The addon's MPI functions (binding/mpi.cc); absent from addons built before them. */
export interface NativeMpi {
  mpiOpen(libPath: string): { loaded: boolean; path: string; abi?: 'openmpi' | 'mpich'; error?: string };
  mpiStatus(): {
    loaded: boolean; path: string | null; abi: 'openmpi' | 'mpich' | 'none'; initialized: boolean; finalized: boolean;
    rank: number; size: number; threadLevel: number; version: string;
  };
  mpiInit(): { rank: number; size: number; threadLevel: number };
  mpiAllReduce(buf: Float32Array, mean: boolean): Promise<void>;
  mpiAllGather(send: Float32Array, recv: Float32Array): Promise<void>;
  mpiBroadcast(buf: Float32Array, root: number): Promise<void>;
  mpiBarrier(): Promise<void>;
  mpiAbort(code: number): void;
  mpiFinalize(): void;
  mpiWtime(): number;
}

function nativeMpi(): NativeMpi {
  const n = loadNative() as unknown as Partial<NativeMpi>;
  if (typeof n.mpiOpen !== 'function') {
    throw new HiermemError('E_BACKEND_UNAVAILABLE', 'this hiermem addon was built without MPI support: rebuild it (npm rebuild hiermem)');
  }
  return n as NativeMpi;
}

/** Opens the MPI library (HIERMEM_MPI_LIB, else the first candidate that opens); E_BACKEND_UNAVAILABLE with every reason. */
export function openMpiLibrary(libPath?: string): { path: string; abi: 'openmpi' | 'mpich' } {
  const native = nativeMpi();
  const env = process.env[MPI_LIB_ENV];
  const candidates = libPath !== undefined ? [libPath] : env ? [env] : [...MPI_LIB_CANDIDATES];
  const errors: string[] = [];
  for (const c of candidates) {
    const r = native.mpiOpen(c);
    if (r.loaded && r.abi) return { path: c, abi: r.abi };
    errors.push(`${c}: ${r.error ?? 'not usable'}`);
  }
  const given = libPath !== undefined ? `check ${libPath}, or ` : env ? `check ${MPI_LIB_ENV}=${env}, or ` : '';
  const how = `${given}install Open MPI (apt-get install ${MPI_PACKAGE}) or MPICH${given ? '' : `, or set ${MPI_LIB_ENV} to the library file`}`;
  throw new HiermemError('E_BACKEND_UNAVAILABLE', `MPI cannot be used here (${errors.join('; ')}): ${how}`);
}

export interface MpiOptions {
  /** The library file (default: HIERMEM_MPI_LIB, else libmpi.so.40, else libmpi.so.12). */
  libPath?: string;
  /** Seconds a collective may take before the job is aborted (default HIERMEM_DIST_TIMEOUT_S, else 600; 0: none). */
  timeoutSec?: number;
}

/** One per process: MPI can be initialised once. */
let instance: MpiCommunicator | undefined;

export class MpiCommunicator implements Communicator {
  readonly kind = 'mpi' as const;
  readonly rank: number;
  readonly size: number;
  readonly abi: 'openmpi' | 'mpich';
  readonly libPath: string;
  readonly stats: CommStats = { collectives: 0, bytesSent: 0 };
  private readonly timeoutMs: number;
  private closed = false;

  private constructor(private readonly native: NativeMpi, lib: { path: string; abi: 'openmpi' | 'mpich' }, timeoutSec: number) {
    const r = native.mpiInit();
    this.rank = r.rank;
    this.size = r.size;
    this.abi = lib.abi;
    this.libPath = lib.path;
    this.timeoutMs = timeoutSec * 1000;
    // A clean exit finalises (MPI expects it of every rank); a failing one aborts the whole job, so
    // that peers waiting in a collective for this rank fail too instead of hanging.
    process.on('exit', (code) => {
      if (this.closed) return;
      if (code === 0) {
        try {
          this.close();
          return;
        } catch {
          // a collective still in flight: abort below rather than leave peers waiting
        }
      }
      this.native.mpiAbort(Math.min(255, Math.max(1, code)));
    });
  }

  /** Initialises MPI in this process (once; later calls return the same communicator). */
  static create(options: MpiOptions = {}): MpiCommunicator {
    if (instance) return instance;
    const lib = openMpiLibrary(options.libPath);
    const envTimeout = Number(process.env[DIST_TIMEOUT_ENV]);
    const timeoutSec = options.timeoutSec ?? (Number.isFinite(envTimeout) && envTimeout >= 0 && process.env[DIST_TIMEOUT_ENV] ? envTimeout : DEFAULT_DIST_TIMEOUT_S);
    instance = new MpiCommunicator(nativeMpi(), lib, timeoutSec);
    return instance;
  }

  /** The MPI library's own version line (e.g. "Open MPI v4.1.4, ..."). */
  version(): string {
    return this.native.mpiStatus().version;
  }

  async allReduceSum(buf: Float32Array): Promise<void> {
    this.count(buf.byteLength * 2 * (this.size - 1) / this.size);
    await this.guard('allReduceSum', this.native.mpiAllReduce(buf, false));
  }

  async allReduceMean(buf: Float32Array): Promise<void> {
    this.count(buf.byteLength * 2 * (this.size - 1) / this.size);
    await this.guard('allReduceMean', this.native.mpiAllReduce(buf, true));
  }

  async allGather(buf: Float32Array): Promise<Float32Array> {
    const out = new Float32Array(buf.length * this.size);
    this.count(buf.byteLength * (this.size - 1));
    await this.guard('allGather', this.native.mpiAllGather(buf, out));
    return out;
  }

  async broadcast(buf: Float32Array, root = 0): Promise<void> {
    this.count(this.rank === root ? buf.byteLength * (this.size - 1) : 0);
    await this.guard('broadcast', this.native.mpiBroadcast(buf, root));
  }

  async barrier(): Promise<void> {
    this.count(0);
    await this.guard('barrier', this.native.mpiBarrier());
  }

  abort(code: number, message?: string): never {
    if (message) process.stderr.write(message.endsWith('\n') ? message : message + '\n');
    this.closed = true;
    this.native.mpiAbort(Math.min(255, Math.max(0, Math.trunc(code) || 0)));
    process.exit(code); // MPI_Abort does not return; in case a library's does
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.native.mpiFinalize();
  }

  private count(bytes: number): void {
    this.stats.collectives++;
    this.stats.bytesSent += bytes;
  }

  /** Awaits a collective; past the timeout the job is aborted (a collective cannot be cancelled). */
  private async guard(what: string, p: Promise<void>): Promise<void> {
    if (this.timeoutMs <= 0) return p;
    const timer = setTimeout(() => {
      this.abort(3, `hiermem: error E_COMM: rank ${this.rank}: ${what} did not complete within ${this.timeoutMs / 1000} s ` +
        `(a peer died or hangs); aborting the job (${DIST_TIMEOUT_ENV} sets the limit)`);
    }, this.timeoutMs);
    try {
      await p;
    } finally {
      clearTimeout(timer);
    }
  }
}
