/**
 * NCCL behind the Communicator interface (issue #14, item 7). The addon opens libnccl.so.2 with
 * dlopen (HIERMEM_NCCL_LIB picks another file) and bootstraps it over MPI as llm.c does: rank 0's
 * ncclGetUniqueId, MPI_Bcast, ncclCommInitRank on every rank. Host-buffer collectives stay MPI's
 * (the MpiCommunicator it wraps: bit-identical, rank-order sums); the device variant,
 * allReduceDevice, all-reduces device memory in place on the device; allReduceModelGradients does
 * it for a CUDA model's gradients on the model's own stream (data-parallel training on the CUDA
 * backend: deviceGradientReducer in ./data-parallel.ts). NCCL's ring / tree all-reduce gives every rank the same bits (each element is reduced once
 * and then copied), but not the rank-order sum of the host path.
 */
import { HiermemError } from '../errors.js';
import { loadNative } from '../native.js';
import type { CommStats, Communicator } from './communicator.js';
import type { MpiCommunicator } from './mpi.js';

export const NCCL_LIB_ENV = 'HIERMEM_NCCL_LIB';
export const NCCL_LIB_CANDIDATES: readonly string[] = ['libnccl.so.2'];
/** What to install where libnccl does not open (NVIDIA's CUDA repository for Debian / Ubuntu). */
export const NCCL_PACKAGE = 'libnccl2';

/** The addon's NCCL functions (binding/nccl.cc); absent from addons built before them. */
export interface NativeNccl {
  ncclOpen(libPath: string): { loaded: boolean; path: string; version?: number; fake?: boolean; error?: string };
  ncclStatus(): { loaded: boolean; fake: boolean; path: string | null; version: number; initialized: boolean; rank: number; size: number; uniqueId: string };
  ncclInit(): { rank: number; size: number };
  ncclAllReduceDevice(ptr: bigint, count: number, mean: boolean): Promise<void>;
  ncclAllReduceHost(buf: Float32Array, mean: boolean): Promise<void>;
  ncclHostAddress(buf: Float32Array): bigint;
  ncclDestroy(): void;
}

export function nativeNccl(): NativeNccl {
  const n = loadNative() as unknown as Partial<NativeNccl>;
  if (typeof n.ncclOpen !== 'function') {
    throw new HiermemError('E_BACKEND_UNAVAILABLE', 'this hiermem addon was built without NCCL support: rebuild it (npm rebuild hiermem)');
  }
  return n as NativeNccl;
}

/** Opens libnccl (the given file, HIERMEM_NCCL_LIB, else libnccl.so.2); E_BACKEND_UNAVAILABLE with the reason. */
export function openNcclLibrary(libPath?: string): { path: string; version: number; fake: boolean } {
  const native = nativeNccl();
  const env = process.env[NCCL_LIB_ENV];
  const candidates = libPath !== undefined ? [libPath] : env ? [env] : [...NCCL_LIB_CANDIDATES];
  const errors: string[] = [];
  for (const c of candidates) {
    const r = native.ncclOpen(c);
    if (r.loaded) return { path: c, version: r.version ?? 0, fake: r.fake ?? false };
    errors.push(`${c}: ${r.error ?? 'not usable'}`);
  }
  throw new HiermemError('E_BACKEND_UNAVAILABLE', `NCCL cannot be used here (${errors.join('; ')}): install ${NCCL_PACKAGE} on a machine with NVIDIA GPUs, or set ${NCCL_LIB_ENV}`);
}

/** NCCL version code (e.g. 21903) as text ("2.19.3"). */
export function ncclVersionText(code: number): string {
  return code >= 10000 ? `${Math.floor(code / 10000)}.${Math.floor(code / 100) % 100}.${code % 100}` : `${Math.floor(code / 1000)}.${Math.floor(code / 100) % 10}.${code % 100}`;
}

export class NcclCommunicator implements Communicator {
  readonly kind = 'nccl' as const;
  readonly rank: number;
  readonly size: number;
  readonly stats: CommStats;
  readonly version: number;
  /** True for the test double (test/dist-fake-nccl.ts), whose "device" memory is host memory. */
  readonly fake: boolean;

  private constructor(private readonly mpi: MpiCommunicator, private readonly native: NativeNccl, lib: { version: number; fake: boolean }) {
    const r = native.ncclInit();
    this.rank = r.rank;
    this.size = r.size;
    this.stats = mpi.stats; // one count of what this process sent, over both transports
    this.version = lib.version;
    this.fake = lib.fake;
    if (this.rank !== mpi.rank || this.size !== mpi.size) {
      throw new HiermemError('E_COMM', `NCCL sees rank ${this.rank} of ${this.size}, MPI rank ${mpi.rank} of ${mpi.size}`);
    }
  }

  /** NCCL over an initialised MPI communicator (every rank calls it: the unique id is broadcast). */
  static create(mpi: MpiCommunicator, options: { libPath?: string } = {}): NcclCommunicator {
    const lib = openNcclLibrary(options.libPath);
    return new NcclCommunicator(mpi, nativeNccl(), lib);
  }

  /** The bootstrap id's first 16 bytes in hex: the same on every rank of one job. */
  uniqueId(): string {
    return this.native.ncclStatus().uniqueId;
  }

  /** In place on device memory at `ptr` (count floats): the sum, or the mean, over ranks. */
  async allReduceDevice(ptr: bigint, count: number, mean: boolean): Promise<void> {
    this.count(count * 4 * 2 * (this.size - 1) / this.size);
    await this.native.ncclAllReduceDevice(ptr, count, mean);
  }

  /**
   * The mean over ranks of a CUDA model's gradients, in place on the device, on the model's stream
   * (CudaAnchorModel.allReduceGradients): data-parallel training on the CUDA backend.
   */
  async allReduceModelGradients(model: { readonly paramCount: number; allReduceGradients(mean: boolean): Promise<void> }): Promise<void> {
    this.count(model.paramCount * 4 * 2 * (this.size - 1) / this.size);
    await model.allReduceGradients(true);
  }

  /** A host buffer all-reduced by NCCL (staged through device memory): the self-check of bench/gpu.sh. */
  async allReduceThroughDevice(buf: Float32Array, mean: boolean): Promise<void> {
    this.count(buf.byteLength * 2 * (this.size - 1) / this.size);
    await this.native.ncclAllReduceHost(buf, mean);
  }

  allReduceSum(buf: Float32Array): Promise<void> {
    return this.mpi.allReduceSum(buf);
  }

  allReduceMean(buf: Float32Array): Promise<void> {
    return this.mpi.allReduceMean(buf);
  }

  allGather(buf: Float32Array): Promise<Float32Array> {
    return this.mpi.allGather(buf);
  }

  broadcast(buf: Float32Array, root = 0): Promise<void> {
    return this.mpi.broadcast(buf, root);
  }

  barrier(): Promise<void> {
    return this.mpi.barrier();
  }

  abort(code: number, message?: string): never {
    return this.mpi.abort(code, message);
  }

  close(): void {
    this.native.ncclDestroy();
    this.mpi.close();
  }

  private count(bytes: number): void {
    this.stats.collectives++;
    this.stats.bytesSent += bytes;
  }
}
