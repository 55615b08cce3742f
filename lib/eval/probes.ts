/**
 * Fact probes (paper §5.2): a prompt such as "The atomic number of Osmium is", its answer, and the
 * frequency bucket of its entity. Accuracy = exact match of the greedy continuation with one
 * leading space dropped, cut at the first delimiter (the single definition of the probe rule;
 * lib/data/facts.ts re-exports it).
 */
import { HiermemError } from '../errors.js';
import type { Tokenizer } from '../data/tokenizer.js';
import type { NextTokenLogits } from '../model/generate.js';
import { readJsonlObjects } from '../io/jsonl-records.js';

export interface Probe {
  prompt: string;
  answer: string;
  bucket?: string;
}

export interface ProbeResult {
  overall: number;
  n: number;
  buckets: Array<{ name: string; n: number; accuracy: number }>;
}

/** An answer ends at the first of these; they never occur inside an answer. End of text also ends it. */
export const PROBE_DELIMITERS: readonly string[] = Object.freeze(['.', ',', ';', '\n']);

/** The answer a continuation gives: one leading space dropped, then cut at the first delimiter. */
export function extractAnswer(continuation: string): string {
  const s = continuation.startsWith(' ') ? continuation.slice(1) : continuation;
  let cut = s.length;
  for (const d of PROBE_DELIMITERS) {
    const i = s.indexOf(d);
    if (i >= 0 && i < cut) cut = i;
  }
  return s.slice(0, cut);
}

/** Exact match of the continuation's answer. */
export function isProbeCorrect(continuation: string, answer: string): boolean {
  return extractAnswer(continuation) === answer;
}

/** Greedy continuation, stopped as soon as it holds a delimiter after some answer text. */
export function greedyAnswer(logits: NextTokenLogits, tok: Tokenizer, prompt: string, maxTokens: number): string {
  const ctx = Array.from(tok.encode(prompt));
  const out: number[] = [];
  for (let i = 0; i < maxTokens; i++) {
    const l = logits(Int32Array.from(ctx));
    let best = 0;
    for (let j = 1; j < l.length; j++) if (l[j]! > l[best]!) best = j;
    if (best === tok.eotId) break;
    out.push(best);
    ctx.push(best);
    const text = tok.decode(out);
    if (PROBE_DELIMITERS.some((d) => text.includes(d))) break;
  }
  return extractAnswer(tok.decode(out));
}

/**
 * Scores probes. `logitsFor(probe, index)` returns the next-token function to use for that prompt (with
 * memory: the prompt's path is retrieved once and fixed for every generated token).
 */
export function scoreProbes(probes: readonly Probe[], tok: Tokenizer, logitsFor: (probe: Probe, index: number) => NextTokenLogits,
                            maxTokens = 12, onProgress?: (done: number) => void): ProbeResult {
  const per = new Map<string, { n: number; ok: number }>();
  let ok = 0;
  probes.forEach((p, i) => {
    const hit = greedyAnswer(logitsFor(p, i), tok, p.prompt, maxTokens) === p.answer;
    if (hit) ok++;
    const b = p.bucket ?? 'all';
    const e = per.get(b) ?? { n: 0, ok: 0 };
    e.n++;
    if (hit) e.ok++;
    per.set(b, e);
    onProgress?.(i + 1);
  });
  const buckets = [...per.entries()].sort(([a], [b]) => a.localeCompare(b, 'en', { numeric: true }))
    .map(([name, e]) => ({ name, n: e.n, accuracy: e.ok / e.n }));
  return { overall: probes.length ? ok / probes.length : 0, n: probes.length, buckets };
}

/** Reads probes JSONL: {"prompt": ..., "answer": ..., "bucket"?: ...} per line. */
export async function readProbes(path: string): Promise<Probe[]> {
  const out: Probe[] = [];
  for (const { record: r, line } of await readJsonlObjects(path, 'probes')) {
    if (typeof r.prompt !== 'string' || typeof r.answer !== 'string' || (r.bucket !== undefined && typeof r.bucket !== 'string')) {
      throw new HiermemError('E_INVALID_ARGUMENT', `${path}:${line}: a probe needs string "prompt" and "answer" (and optional string "bucket")`);
    }
    out.push({ prompt: r.prompt, answer: r.answer, ...(r.bucket !== undefined ? { bucket: r.bucket as string } : {}) });
  }
  if (out.length === 0) throw new HiermemError('E_INVALID_ARGUMENT', `${path}: no probes`);
  return out;
}
