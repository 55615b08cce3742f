/**
 * Random training windows over one long token stream (the anchor-only path; the memory path packs
 * documents per leaf instead). Each window of seqLen + 1 tokens yields inputs and shifted targets.
 */
import { HiermemError } from '../errors.js';
import type { Batch } from '../model/anchor.js';
import { Rng } from '../util/random.js';

export class WindowSampler {
  readonly stream: Int32Array;
  readonly seqLen: number;
  readonly rng: Rng;

  constructor(stream: Int32Array, seqLen: number, seed: number | Uint32Array) {
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
      tokens.set(this.stream.subarray(s, s + T), b * T);
      targets.set(this.stream.subarray(s + 1, s + T + 1), b * T);
    }
    return { tokens, targets, batchSize };
  }
}
