/**
 * Random training windows over one long token stream (the anchor-only path; the memory path packs
 * documents per leaf instead). Each window of seqLen + 1 tokens yields inputs and shifted targets.
 */
import { HiermemError } from '../errors.js';
import type { Batch } from '../model/anchor.js';
import { Rng } from '../util/random.js';

/** Tokens read by range: a prepared stream on disk (prepared.ts TokenStream) or one in memory. */
export interface TokenSource {
  readonly length: number;
  /** Tokens [from, from + n). */
  read(from: number, n: number): Int32Array;
}

export class WindowSampler {
  readonly stream: Int32Array | TokenSource;
  readonly seqLen: number;
  readonly rng: Rng;

  /** The stream in memory, or read by range from disk: the same draws give the same windows. */
  constructor(stream: Int32Array | TokenSource, seqLen: number, seed: number | Uint32Array) {
    if (stream.length < seqLen + 1) {
      throw new HiermemError('E_INVALID_ARGUMENT', `corpus has ${stream.length} tokens; need at least seqLen + 1 = ${seqLen + 1}`);
    }
    this.stream = stream;
    this.seqLen = seqLen;
    this.rng = new Rng(seed);
  }

  /** The sampler's RNG state (saved in checkpoints; pass it back as `seed` to resume exactly). */
  rngState(): number[] {
    return Array.from(this.rng.state());
  }

  /** A batch of `batchSize` windows at random offsets. */
  next(batchSize: number): Batch {
    const T = this.seqLen;
    const tokens = new Int32Array(batchSize * T);
    const targets = new Int32Array(batchSize * T);
    const maxStart = this.stream.length - T - 1;
    for (let b = 0; b < batchSize; b++) {
      const s = this.rng.int(maxStart + 1);
      const w = this.stream instanceof Int32Array ? this.stream.subarray(s, s + T + 1) : this.stream.read(s, T + 1);
      tokens.set(w.subarray(0, T), b * T);
      targets.set(w.subarray(1), b * T);
    }
    return { tokens, targets, batchSize };
  }
}
