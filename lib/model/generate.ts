/**
 * Text generation: repeated next-token prediction with temperature and top-k sampling
 * (temperature 0 = greedy). The prompt runs once into a KV cache and each new token costs one
 * single-position step, while the context fits in seqLen; past that the last seqLen tokens are
 * re-run for every token (a sliding window shifts every cached key, so the cache cannot follow).
 */
import { check } from '../errors.js';
import { Rng } from '../util/random.js';
import type { AnchorModel, TokenDecoder } from './anchor.js';

export interface GenerateOptions {
  maxTokens: number;
  temperature: number;
  topK: number;
  seed: number;
  /** Stop when this token is produced (not included in the output). */
  stopToken?: number;
}

export const DEFAULT_GENERATE: GenerateOptions = { maxTokens: 64, temperature: 0.8, topK: 40, seed: 1 };

/** Samples one id from logits (V). */
export function sampleToken(logits: Float32Array, temperature: number, topK: number, rng: Rng): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i]! > logits[best]!) best = i;
  if (temperature <= 0) return best;
  const order = Array.from(logits.keys()).sort((a, b) => logits[b]! - logits[a]!);
  const k = topK > 0 ? Math.min(topK, order.length) : order.length;
  const mx = logits[order[0]!]!;
  const w = new Float64Array(k);
  let sum = 0;
  for (let i = 0; i < k; i++) {
    w[i] = Math.exp((logits[order[i]!]! - mx) / temperature);
    sum += w[i]!;
  }
  let u = rng.uniform() * sum;
  for (let i = 0; i < k; i++) {
    u -= w[i]!;
    if (u <= 0) return order[i]!;
  }
  return order[k - 1]!;
}

/**
 * Anything that maps a context to next-token logits: an AnchorModel, or a model with a fixed memory
 * path. It may carry `decoder`, a factory of KV-cached decoders giving the same logits (as
 * HierarchicalModel.logitsForPath does); generate then uses it while the context fits.
 */
export type NextTokenLogits = ((context: Int32Array) => Float32Array) & { decoder?: () => TokenDecoder };

/**
 * Generates up to maxTokens tokens after `prompt`. With memories, retrieval happens once per prompt
 * (paper §3.5): pass a function that closes over the prompt's path.
 */
export function generate(model: AnchorModel | NextTokenLogits, prompt: Int32Array, options: Partial<GenerateOptions> = {}): Int32Array {
  const logitsOf: NextTokenLogits = typeof model === 'function' ? model : (ctx) => model.nextTokenLogits(ctx);
  const o = { ...DEFAULT_GENERATE, ...options };
  check(Number.isInteger(o.maxTokens) && o.maxTokens >= 0, 'E_INVALID_ARGUMENT', 'maxTokens must be an integer >= 0');
  check(o.temperature >= 0 && Number.isFinite(o.temperature), 'E_INVALID_ARGUMENT', 'temperature must be >= 0');
  const newDecoder = typeof model === 'function' ? model.decoder : () => model.decoder();
  const rng = new Rng(o.seed);
  const ctx = Array.from(prompt);
  const out: number[] = [];
  let dec: TokenDecoder | null = null;
  for (let i = 0; i < o.maxTokens; i++) {
    let logits: Float32Array;
    if (i === 0) {
      // the cache only while the context fits; an empty prompt takes the old path for its error
      dec = newDecoder && ctx.length > 0 ? newDecoder() : null;
      if (dec && ctx.length > dec.capacity) dec = null;
      logits = dec ? dec.prefill(Int32Array.from(ctx)) : logitsOf(Int32Array.from(ctx));
    } else if (dec && dec.length < dec.capacity) {
      logits = dec.step(ctx[ctx.length - 1]!);
    } else {
      dec = null; // full: sliding window from here on (nextTokenLogits keeps the last seqLen tokens)
      logits = logitsOf(Int32Array.from(ctx));
    }
    const t = sampleToken(logits, o.temperature, o.topK, rng);
    if (o.stopToken !== undefined && t === o.stopToken) break;
    out.push(t);
    ctx.push(t);
  }
  return Int32Array.from(out);
}
