/**
 * MemoryBank: the tree of memory blocks, addressed by (level, node), stored either in RAM or in a
 * memory-mapped safetensors file (the file may be far larger than RAM: opening it reads only the
 * header, and a fetch touches only the fetched blocks' pages). Both backends sit behind one native
 * object, so gather / scatter-add / row-sparse AdamW are the same code and give bit-identical
 * results. Blocks are initialised lazily and deterministically from the seed on first fetch (by the
 * native bank, before the gather copies them).
 *
 * gather, blockGradients and adamwUpdate each have an …Async twin that runs on a worker thread:
 * a file bank's fetch can wait on the disk, which must not stall the event loop (training uses
 * them). While one runs the bank is `busy` and calls that touch its data throw E_BUSY.
 */
import os from 'node:os';
import { statfs } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { HiermemError, check } from '../errors.js';
import { loadNative } from '../native.js';
import type { BankTensorSlot, NativeMemoryBank } from '../native-types.js';
import { createSafetensorsFile, readSafetensorsHeader, type TensorLayout } from '../io/safetensors.js';
import { type ResolvedMemorySpec, resolveMemorySpec, toNativeSpec } from './spec.js';

export const BANK_FORMAT = 'hiermem-bank';
export const BANK_VERSION = '1';

export interface BankOptions {
  seed: number;
  /** Keep AdamW state (m, v, per-block steps) in the bank; needed to train it. Default true. */
  optimizer?: boolean;
  /**
   * Allow a bank larger than physical memory (RAM banks) or than the free disk space (file banks).
   * Both are backed lazily (zero pages, sparse file), so this works as long as training touches
   * only part of the bank; without it such a bank is refused up front. Default false.
   */
  allowOvercommit?: boolean;
}

/** Hyperparameters of the bank's row-sparse AdamW (each block's own step count drives its bias correction). */
export interface BankAdamWHyper {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  gradScale: number;
}

const GiB = (n: number) => `${(n / 2 ** 30).toFixed(2)} GiB`;

function bankBytes(spec: ResolvedMemorySpec, dModel: number, optimizer: boolean): number {
  const slots = loadNative().memoryBankTensors(toNativeSpec(spec, dModel, optimizer));
  return slots.reduce((n, t) => n + t.byteSize, 0);
}

export interface OpenBankOptions {
  writable?: boolean;
  /** mlock the first n levels (the shallow ones every batch fetches); best effort. */
  pinLevels?: number;
}

interface BankMeta {
  spec: ResolvedMemorySpec;
  dModel: number;
  seed: number;
  optimizer: boolean;
}

function metadataOf(m: BankMeta): Record<string, string> {
  return {
    format: BANK_FORMAT,
    version: BANK_VERSION,
    spec: JSON.stringify(m.spec),
    d_model: String(m.dModel),
    seed: String(m.seed),
    optimizer: String(m.optimizer),
  };
}

function layoutOf(slots: BankTensorSlot[]): TensorLayout[] {
  return slots.map((s) => ({ name: s.name, dtype: s.dtype, shape: s.shape }));
}

/** A spec read from a bank file, checked field by field (E_CHECKPOINT_CORRUPT) before it sizes anything. */
function parseStoredSpec(path: string, raw: unknown): ResolvedMemorySpec {
  const bad = (why: string): never => { throw new HiermemError('E_CHECKPOINT_CORRUPT', `${path}: bank metadata "spec" ${why}`); };
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return bad('is not an object');
  const o = raw as Record<string, unknown>;
  const ints = (v: unknown): v is number[] => Array.isArray(v) && v.every((x) => Number.isInteger(x) && (x as number) >= 0);
  if (!ints(o.levels) || !ints(o.layers) || typeof o.k !== 'number' || typeof o.generic !== 'boolean' || o.type !== 'ffn') {
    return bad('needs k, levels, layers, type "ffn" and generic');
  }
  const layers = o.layers;
  // the same rules as resolveMemorySpec; layers must be sorted and unique as it leaves them
  if (layers.length === 0 || layers.some((l, i) => i > 0 && l <= layers[i - 1]!)) return bad('has unsorted or repeated layers');
  let spec: ResolvedMemorySpec;
  try {
    spec = resolveMemorySpec({ k: o.k, levels: o.levels, layers, generic: o.generic }, { nLayers: layers[layers.length - 1]! + 1, dModel: 1 });
  } catch (e) {
    return bad(`is invalid: ${(e as Error).message}`);
  }
  return spec;
}

export class MemoryBank {
  readonly spec: ResolvedMemorySpec;
  readonly dModel: number;
  readonly seed: number;
  readonly optimizer: boolean;
  /** File path for a file-backed bank, undefined in RAM. */
  readonly path: string | undefined;
  private native: NativeMemoryBank | null;

  private constructor(meta: BankMeta, native: NativeMemoryBank, path?: string) {
    this.spec = meta.spec;
    this.dModel = meta.dModel;
    this.seed = meta.seed;
    this.optimizer = meta.optimizer;
    this.native = native;
    this.path = path;
  }

  /** A bank in RAM (zero pages until blocks are touched). */
  static createInMemory(spec: ResolvedMemorySpec, dModel: number, options: BankOptions): MemoryBank {
    const meta = MemoryBank.meta(spec, dModel, options);
    const bytes = bankBytes(spec, dModel, meta.optimizer);
    if (!options.allowOvercommit && bytes > os.totalmem()) {
      throw new HiermemError('E_CONFIG_INVALID', `memory bank needs ${GiB(bytes)}, this machine has ${GiB(os.totalmem())} of RAM: use a bank file (createFile) or pass allowOvercommit`);
    }
    const native = loadNative().createMemoryBank(toNativeSpec(spec, dModel, meta.optimizer), meta.seed, { kind: 'ram' });
    return new MemoryBank(meta, native);
  }

  /** Creates a bank file (sparse: no data is written until blocks are trained) and maps it. */
  static async createFile(path: string, spec: ResolvedMemorySpec, dModel: number, options: BankOptions): Promise<MemoryBank> {
    const meta = MemoryBank.meta(spec, dModel, options);
    const slots = loadNative().memoryBankTensors(toNativeSpec(spec, dModel, meta.optimizer));
    const bytes = slots.reduce((n, t) => n + t.byteSize, 0);
    if (!options.allowOvercommit) {
      let free = Number.POSITIVE_INFINITY;
      try {
        const st = await statfs(dirname(resolve(path)));
        free = st.bavail * st.bsize;
      } catch {
        // no statfs for this path: the write below reports the real error
      }
      if (bytes > free) {
        throw new HiermemError('E_CONFIG_INVALID', `memory bank needs ${GiB(bytes)} on disk, ${dirname(resolve(path))} has ${GiB(free)} free; the file is sparse, so pass allowOvercommit if training will touch only part of it`);
      }
    }
    await createSafetensorsFile(path, layoutOf(slots), metadataOf(meta));
    return MemoryBank.openFile(path, { writable: true });
  }

  /** Maps an existing bank file; reads and validates only its header. */
  static async openFile(path: string, options: OpenBankOptions = {}): Promise<MemoryBank> {
    const header = await readSafetensorsHeader(path);
    const md = header.metadata;
    if (md.format !== BANK_FORMAT) throw new HiermemError('E_CHECKPOINT_CORRUPT', `${path}: not a hiermem memory bank (format ${String(md.format)})`);
    if (md.version !== BANK_VERSION) throw new HiermemError('E_CONFIG_INCOMPATIBLE', `${path}: bank version ${String(md.version)}, this build reads ${BANK_VERSION}`);
    let rawSpec: unknown;
    try {
      rawSpec = JSON.parse(md.spec ?? '');
    } catch {
      throw new HiermemError('E_CHECKPOINT_CORRUPT', `${path}: bank metadata "spec" is not valid JSON`);
    }
    const meta: BankMeta = { spec: parseStoredSpec(path, rawSpec), dModel: Number(md.d_model), seed: Number(md.seed), optimizer: md.optimizer === 'true' };
    if (!Number.isInteger(meta.dModel) || meta.dModel < 1 || !Number.isSafeInteger(meta.seed) || meta.seed < 0 ||
        (md.optimizer !== 'true' && md.optimizer !== 'false')) {
      throw new HiermemError('E_CHECKPOINT_CORRUPT', `${path}: bank metadata is malformed (d_model ${String(md.d_model)}, seed ${String(md.seed)}, optimizer ${String(md.optimizer)})`);
    }
    const nspec = toNativeSpec(meta.spec, meta.dModel, meta.optimizer);
    const native = loadNative();
    let slots: BankTensorSlot[];
    try {
      slots = native.memoryBankTensors(nspec);
    } catch (e) {
      throw new HiermemError('E_CHECKPOINT_CORRUPT', `${path}: bank spec is invalid: ${(e as Error).message}`, { cause: e });
    }
    // The file's tensors must be exactly the layout this spec implies (names, dtypes, shapes, offsets).
    const found = [...header.tensors.entries()];
    if (found.length !== slots.length) {
      throw new HiermemError('E_CONFIG_INCOMPATIBLE', `${path}: ${found.length} tensors, the bank spec needs ${slots.length}`);
    }
    slots.forEach((s, i) => {
      const [name, t] = found[i]!;
      const ok = name === s.name && t.dtype === s.dtype && t.begin === s.byteOffset && t.end === s.byteOffset + s.byteSize &&
        t.shape.length === s.shape.length && t.shape.every((d, j) => d === s.shape[j]);
      if (!ok) throw new HiermemError('E_CONFIG_INCOMPATIBLE', `${path}: tensor ${name} does not match the bank layout (expected ${s.name} ${s.dtype} [${s.shape.join(', ')}])`);
    });
    const nb = native.createMemoryBank(nspec, meta.seed, { kind: 'file', path, dataStart: header.dataStart, writable: options.writable ?? true });
    const bank = new MemoryBank(meta, nb, path);
    if (options.pinLevels) bank.live().pinLevels(options.pinLevels);
    return bank;
  }

  private static meta(spec: ResolvedMemorySpec, dModel: number, o: BankOptions): BankMeta {
    check(Number.isInteger(o.seed) && o.seed >= 0, 'E_INVALID_ARGUMENT', `bank seed must be an integer >= 0, got ${o.seed}`);
    return { spec, dModel, seed: o.seed, optimizer: o.optimizer ?? true };
  }

  get levels(): number {
    return this.spec.levels.length;
  }
  /** Hidden units per memory layer in a fetched slot (R). */
  get unitsPerLayer(): number {
    return this.spec.levels.reduce((a, b) => a + b, 0);
  }
  /** Floats of one fetched slot: Lm · 3 · R · d. */
  get slotFloats(): number {
    return this.spec.layers.length * 3 * this.unitsPerLayer * this.dModel;
  }
  get bytes(): number {
    return this.live().bytes;
  }

  /** fetched (S, Lm, 3, R, d) for S paths (S, p); a path starting with -1 takes the generic block. */
  gather(paths: Int32Array): Float32Array {
    const fetched = new Float32Array((paths.length / this.levels) * this.slotFloats);
    this.live().gather(fetched, paths);
    return fetched;
  }

  /** gather into a caller-owned buffer of (S · slotFloats) floats. */
  gatherInto(fetched: Float32Array, paths: Int32Array): void {
    this.live().gather(fetched, paths);
  }

  /** gather on a worker thread. */
  async gatherAsync(paths: Int32Array): Promise<Float32Array> {
    const fetched = new Float32Array((paths.length / this.levels) * this.slotFloats);
    await this.live().gatherAsync(fetched, paths);
    return fetched;
  }

  /** gatherInto on a worker thread. */
  async gatherIntoAsync(fetched: Float32Array, paths: Int32Array): Promise<void> {
    await this.live().gatherAsync(fetched, paths);
  }

  /** True while an asynchronous call runs on this bank. */
  get busy(): boolean {
    return this.native?.busy ?? false;
  }

  /** Pages in the blocks of upcoming paths (file banks) while the current step computes. */
  prefetch(paths: Int32Array): void {
    this.live().prefetch(paths);
  }

  /**
   * Turns fetched-slot gradients into per-block gradients: the unique (level, node) blocks of
   * these paths and their summed gradients (repeated paths add).
   */
  blockGradients(dfetched: Float32Array, paths: Int32Array): { blocks: Int32Array; grads: Float32Array } {
    const { blocks, grads } = this.gradientBuffers(paths);
    this.live().scatterAdd(grads, blocks, dfetched, paths);
    return { blocks, grads };
  }

  /** blockGradients with the scatter-add on a worker thread. */
  async blockGradientsAsync(dfetched: Float32Array, paths: Int32Array): Promise<{ blocks: Int32Array; grads: Float32Array }> {
    const { blocks, grads } = this.gradientBuffers(paths);
    await this.live().scatterAddAsync(grads, blocks, dfetched, paths);
    return { blocks, grads };
  }

  /** The unique blocks of these paths (computed from the paths alone) and a zeroed gradient buffer for them. */
  private gradientBuffers(paths: Int32Array): { blocks: Int32Array; grads: Float32Array } {
    const blocks = this.live().uniqueBlocks(paths);
    let size = 0;
    for (let i = 0; i < blocks.length; i += 2) size += this.blockFloats(blocks[i]!);
    return { blocks, grads: new Float32Array(size) };
  }

  /** Row-sparse AdamW on the given blocks (each with its own step count); other blocks untouched. */
  adamwUpdate(blocks: Int32Array, grads: Float32Array, h: BankAdamWHyper, weightDecay: number): void {
    this.live().adamwUpdate(blocks, grads, h, weightDecay);
  }

  /** adamwUpdate on a worker thread. */
  async adamwUpdateAsync(blocks: Int32Array, grads: Float32Array, h: BankAdamWHyper, weightDecay: number): Promise<void> {
    await this.live().adamwUpdateAsync(blocks, grads, h, weightDecay);
  }

  blockFloats(level: number): number {
    const rows = level < this.levels ? this.spec.levels[level]! : this.unitsPerLayer;
    return this.spec.layers.length * 3 * rows * this.dModel;
  }

  readBlock(level: number, node: number, kind: 'weight' | 'm' | 'v' = 'weight'): Float32Array {
    const out = new Float32Array(this.blockFloats(level));
    this.live().readBlock(kind, level, node, out);
    return out;
  }

  writeBlock(level: number, node: number, data: Float32Array, kind: 'weight' | 'm' | 'v' = 'weight'): void {
    this.live().writeBlock(kind, level, node, data);
  }

  blockSteps(level: number, node: number): number {
    return this.live().blockSteps(level, node);
  }

  /** Makes a file bank durable (msync); a no-op in RAM. */
  flush(): void {
    this.live().flush();
  }

  /**
   * File banks: writes dirty pages back and drops the bank's pages from the page cache, so later
   * fetches read from disk (what a bank larger than RAM does; the benchmark's cold-cache fetches).
   * A no-op in RAM.
   */
  releasePageCache(): void {
    this.live().releasePageCache();
  }

  /** Bytes of the bank resident in memory (page cache for file banks, via mincore). */
  residentBytes(): number {
    return this.live().residentBytes();
  }

  /** Writes the bank to a new file atomically (temp, fsync, rename). */
  async save(path: string): Promise<void> {
    const n = this.live();
    const slots = loadNative().memoryBankTensors(toNativeSpec(this.spec, this.dModel, this.optimizer));
    if (this.path === path) {
      n.flush();
      return;
    }
    const meta = { spec: this.spec, dModel: this.dModel, seed: this.seed, optimizer: this.optimizer };
    await createSafetensorsFile(path, layoutOf(slots), metadataOf(meta), (tmp, dataStart) => n.saveData(tmp, dataStart));
  }

  /** Loads a bank file fully into RAM (e.g. to train without touching the file). */
  static async loadIntoMemory(path: string): Promise<MemoryBank> {
    const mapped = await MemoryBank.openFile(path, { writable: false });
    const header = await readSafetensorsHeader(path);
    const ram = MemoryBank.createInMemory(mapped.spec, mapped.dModel, { seed: mapped.seed, optimizer: mapped.optimizer });
    mapped.close();
    ram.live().loadData(path, header.dataStart);
    return ram;
  }

  close(): void {
    this.native?.close();
    this.native = null;
  }

  [Symbol.dispose](): void {
    this.close();
  }

  private live(): NativeMemoryBank {
    if (!this.native) throw new HiermemError('E_DISPOSED', 'this memory bank was closed');
    return this.native;
  }
}
