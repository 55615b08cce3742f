/**
 * Small JSON Lines files read whole (probes, documents to evaluate): every non-blank line one JSON
 * object. Large corpora go through the streaming readers of lib/data/readers instead.
 */
import { readFile } from 'node:fs/promises';
import { HiermemError } from '../errors.js';

export interface JsonlRecord {
  record: Record<string, unknown>;
  /** 1-based line number, for error messages. */
  line: number;
}

/** Unreadable → E_IO ("cannot read <what> <file>"); a line that is not a JSON object → E_INVALID_ARGUMENT with file:line. */
export async function readJsonlObjects(file: string, what: string): Promise<JsonlRecord[]> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    throw new HiermemError('E_IO', `cannot read ${what} ${file}: ${(e as Error).message}`, { cause: e });
  }
  const out: JsonlRecord[] = [];
  text.split('\n').forEach((line, i) => {
    if (!line.trim()) return;
    let o: unknown;
    try {
      o = JSON.parse(line);
    } catch {
      throw new HiermemError('E_INVALID_ARGUMENT', `${file}:${i + 1}: not valid JSON`);
    }
    if (typeof o !== 'object' || o === null || Array.isArray(o)) throw new HiermemError('E_INVALID_ARGUMENT', `${file}:${i + 1}: expected a JSON object`);
    out.push({ record: o as Record<string, unknown>, line: i + 1 });
  });
  return out;
}
