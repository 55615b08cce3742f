/**
 * Documents → one token stream with <|eot|> between documents, split into train / validation by
 * document (the last `valFraction` of documents, at least one, held out).
 */
import { HiermemError } from '../errors.js';
import type { Tokenizer } from './tokenizer.js';

export function encodeDocuments(docs: readonly string[], tok: Tokenizer): Int32Array {
  const parts = docs.map((d) => tok.encode(d));
  const total = parts.reduce((n, p) => n + p.length + 1, 0);
  const out = new Int32Array(total);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
    out[o++] = tok.eotId;
  }
  return out;
}

export function splitDocuments(docs: readonly string[], valFraction: number): { train: string[]; val: string[] } {
  if (docs.length < 2) throw new HiermemError('E_INVALID_ARGUMENT', `need at least 2 documents to hold some out for validation, got ${docs.length}`);
  const nVal = Math.min(docs.length - 1, Math.max(1, Math.round(docs.length * valFraction)));
  return { train: docs.slice(0, docs.length - nVal), val: docs.slice(docs.length - nVal) };
}
