/**
 * The Hugging Face Llama-family fixtures (test/fixtures/llama, written by
 * scripts/make-llama-fixture.py) and the checks the hf-*.test.ts files share: our logits and greedy
 * tokens against the PyTorch reference stored beside each model.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { cpSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { HiermemError } from '../lib/errors.js';
import type { AnchorModel } from '../lib/model/anchor.js';
import { generate } from '../lib/model/generate.js';
import { readSafetensors } from '../lib/io/safetensors.js';

/** The fixtures live in the source tree, two levels above dist/test. */
export const FIXTURES = fileURLToPath(new URL('../../test/fixtures/llama/', import.meta.url));
export const SCRIPT = fileURLToPath(new URL('../../scripts/make-llama-fixture.py', import.meta.url));
/** Every variant the script writes: GQA, untied head, Qwen2 biases, a sharded f16 index, bf16, llama3 RoPE scaling. */
export const VARIANTS = ['gqa', 'untied', 'qwen2', 'sharded', 'bf16', 'llama3-rope'] as const;
export const REL_TOL = 1e-4;

export function fixture(variant: string): string {
  return path.join(FIXTURES, variant);
}

/** A writable copy of a fixture folder (for corrupting it). */
export function copyFixture(variant: string, to: string): string {
  cpSync(fixture(variant), to, { recursive: true });
  return to;
}

export interface Reference {
  tokens: Int32Array;
  /** (T, V) next-token logits of every prefix. */
  logits: Float32Array;
  /** (T-1) NLL of tokens[1:]. */
  nll: Float64Array;
  prompt: Int32Array;
  greedy: Int32Array;
}

export async function reference(variant: string): Promise<Reference> {
  const f = await readSafetensors(path.join(fixture(variant), 'reference.safetensors'));
  const get = (n: string) => f.tensors.get(n)!.data;
  return { tokens: get('tokens') as Int32Array, logits: get('logits') as Float32Array, nll: get('nll') as Float64Array,
    prompt: get('prompt') as Int32Array, greedy: get('greedy') as Int32Array };
}

/** max |ours - ref| / max |ref| over the next-token logits of every prefix of the reference tokens. */
export function worstLogitError(model: AnchorModel, ref: Reference): number {
  const V = model.config.vocabSize;
  assert.equal(ref.logits.length, ref.tokens.length * V, 'reference logits are (T, V) of this vocab');
  let worst = 0;
  for (let t = 1; t <= ref.tokens.length; t++) {
    const ours = model.nextTokenLogits(ref.tokens.subarray(0, t));
    let diff = 0, scale = 0;
    for (let i = 0; i < V; i++) {
      const r = ref.logits[(t - 1) * V + i]!;
      diff = Math.max(diff, Math.abs(ours[i]! - r));
      scale = Math.max(scale, Math.abs(r));
    }
    worst = Math.max(worst, diff / scale);
  }
  return worst;
}

/** The model's mean loss on the reference sequence against the reference's mean NLL: relative difference. */
export function lossError(model: AnchorModel, ref: Reference): number {
  const T = ref.tokens.length - 1;
  const tokens = ref.tokens.slice(0, T), targets = ref.tokens.slice(1);
  const ours = model.lossSync({ tokens: padTo(tokens, model.config.seqLen, 0), targets: padTo(targets, model.config.seqLen, -1), batchSize: 1 });
  const want = ref.nll.reduce((a, b) => a + b, 0) / T;
  return Math.abs(ours - want) / Math.abs(want);
}

export function padTo(a: Int32Array, n: number, fill: number): Int32Array {
  const out = new Int32Array(n).fill(fill);
  out.set(a.subarray(0, n));
  return out;
}

/** Greedy continuation of the reference prompt (KV-cached decoding). */
export function greedyTokens(model: AnchorModel, ref: Reference): number[] {
  return [...generate(model, ref.prompt, { maxTokens: ref.greedy.length, temperature: 0 })];
}

/** PyTorch from /usr/bin/python3 (the Debian package the bench uses), or why not. */
export function torchMissing(): string | false {
  try {
    execFileSync('/usr/bin/python3', ['-c', 'import torch'], { stdio: 'pipe' });
    return false;
  } catch {
    return 'PyTorch is not importable from /usr/bin/python3 (apt-get install python3-torch)';
  }
}

/** Asserts that `fn` rejects with a HiermemError of `code` whose message matches `re`. */
export async function rejectsWith(fn: () => Promise<unknown>, code: string, re?: RegExp): Promise<void> {
  await assert.rejects(fn, (e: unknown) => {
    assert.ok(e instanceof HiermemError, `expected a HiermemError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    if (re) assert.match(e.message, re);
    return true;
  });
}
