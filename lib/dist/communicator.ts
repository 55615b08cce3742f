/**
 * Collectives across the processes of one job (issue #14). A Communicator is what data-parallel
 * training needs from a transport: rank and size, an all-reduce whose result has the same bits on
 * every rank, all-gather, broadcast, barrier and abort. LocalCommunicator is the one-process case
 * (size 1, every collective the identity); MpiCommunicator (./mpi.ts) runs them over MPI. The
 * buffers are host Float32Arrays; NcclCommunicator (./nccl.ts) implements the same interface for
 * host buffers (through MPI) and adds a device-buffer all-reduce beside it.
 */

/** Which transport a run uses: 'none' (one process) or 'mpi' (launched by mpirun). */
export type DistMode = 'none' | 'mpi';

/** Counts of what a communicator has done, for benchmarks (bytes are this rank's sends). */
export interface CommStats {
  collectives: number;
  bytesSent: number;
}

export interface Communicator {
  /** 'nccl': MPI for host buffers plus NCCL for device buffers (./nccl.ts). */
  readonly kind: 'local' | 'mpi' | 'nccl';
  readonly rank: number;
  readonly size: number;
  readonly stats: CommStats;
  /**
   * In place: the element-wise sum over ranks (the same length on every rank), the ranks' values
   * added in rank order, so every rank gets bit-identical results whatever the transport's
   * reduction algorithm would do.
   */
  allReduceSum(buf: Float32Array): Promise<void>;
  /** allReduceSum, then divided by size (the sum's bits are identical on every rank, so the mean's are). */
  allReduceMean(buf: Float32Array): Promise<void>;
  /** Every rank's `buf` (the same length everywhere), concatenated in rank order. */
  allGather(buf: Float32Array): Promise<Float32Array>;
  /** In place: `root`'s buf on every rank. */
  broadcast(buf: Float32Array, root?: number): Promise<void>;
  barrier(): Promise<void>;
  /** Ends the whole job with `code` (every rank), after printing `message` on this rank's stderr. */
  abort(code: number, message?: string): never;
  /** Leaves the transport (MPI_Finalize); idempotent. The process exits normally afterwards. */
  close(): void;
}

/** The one-process communicator: rank 0 of 1; collectives leave their buffers as they are. */
export class LocalCommunicator implements Communicator {
  readonly kind = 'local' as const;
  readonly rank = 0;
  readonly size = 1;
  readonly stats: CommStats = { collectives: 0, bytesSent: 0 };

  async allReduceSum(_buf: Float32Array): Promise<void> {
    this.stats.collectives++;
  }

  async allReduceMean(_buf: Float32Array): Promise<void> {
    this.stats.collectives++;
  }

  async allGather(buf: Float32Array): Promise<Float32Array> {
    this.stats.collectives++;
    return buf.slice();
  }

  async broadcast(_buf: Float32Array, _root = 0): Promise<void> {
    this.stats.collectives++;
  }

  async barrier(): Promise<void> {}

  abort(code: number, message?: string): never {
    if (message) process.stderr.write(message.endsWith('\n') ? message : message + '\n');
    process.exit(code);
  }

  close(): void {}
}

/** The environment variables MPI launchers set: Open MPI's mpirun, and Hydra / PMI launchers (MPICH, Slurm). */
export const LAUNCHER_SIZE_ENV = ['OMPI_COMM_WORLD_SIZE', 'PMI_SIZE', 'PMIX_SIZE'] as const;

/**
 * The world size an MPI launcher announced to this process, or null when none did (a plain
 * process). Used to warn when `--dist` is missing under mpirun, never to switch MPI on by itself.
 */
export function launcherWorldSize(env: NodeJS.ProcessEnv = process.env): number | null {
  for (const name of LAUNCHER_SIZE_ENV) {
    const v = Number(env[name]);
    if (Number.isInteger(v) && v >= 1) return v;
  }
  return null;
}

/**
 * The sum over ranks of `parts` (size slices of equal length, in rank order) added in rank order
 * in float32: the reference of allReduceSum (what the native code computes).
 */
export function orderedSum(parts: readonly Float32Array[]): Float32Array {
  const n = parts[0]?.length ?? 0;
  const out = new Float32Array(n);
  if (parts.length === 0) return out;
  out.set(parts[0]!);
  for (let r = 1; r < parts.length; r++) {
    const p = parts[r]!;
    for (let i = 0; i < n; i++) out[i] = Math.fround(out[i]! + p[i]!);
  }
  return out;
}
