/**
 * Corpus paths as users give them: a file, a folder (every non-hidden file below it), or a glob
 * ("shards/*.jsonl.gz", "data/**\/*.parquet"), several of each. Resolved to a sorted, de-duplicated
 * list so that the document order, and everything prepared from it, does not depend on the file
 * system's listing order.
 */
import { readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { HiermemError } from '../../errors.js';
import type { CorpusFormat } from './types.js';

export interface CorpusFile {
  path: string;
  bytes: number;
}

export async function resolveCorpusFiles(specs: readonly string[]): Promise<CorpusFile[]> {
  if (specs.length === 0) throw new HiermemError('E_INVALID_ARGUMENT', 'no corpus given');
  const out: string[] = [];
  for (const spec of specs) {
    if (typeof spec !== 'string' || spec.length === 0) throw new HiermemError('E_INVALID_ARGUMENT', 'corpus path must be a non-empty string');
    const found = /[*?[]/.test(spec) ? await expandGlob(spec) : await expandPath(spec);
    if (found.length === 0) throw new HiermemError('E_IO', `${spec}: no corpus files found`);
    out.push(...found);
  }
  const unique = [...new Set(out)];
  // files named on the command line keep their order; files found under one spec are sorted (done above)
  const files: CorpusFile[] = [];
  for (const p of unique) files.push({ path: p, bytes: (await stat(p)).size });
  return files;
}

async function expandPath(p: string): Promise<string[]> {
  let st;
  try {
    st = await stat(p);
  } catch (err) {
    throw new HiermemError('E_IO', `cannot open ${p}: ${(err as Error).message}`, { cause: err });
  }
  if (st.isFile()) return [p];
  if (st.isDirectory()) return (await walk(p)).sort();
  throw new HiermemError('E_IO', `cannot read ${p}: not a regular file or folder`);
}

async function walk(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    if (e.name.startsWith('.')) continue; // editor swap files, .DS_Store, partial downloads
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...(await walk(p)));
    else if (e.isFile()) out.push(p);
  }
  return out;
}

/** The fixed folder in front of the first wildcard is walked; the rest matches as a pattern. */
async function expandGlob(spec: string): Promise<string[]> {
  const parts = spec.split(/[\\/]/);
  const firstWild = parts.findIndex((s) => /[*?[]/.test(s));
  const base = parts.slice(0, firstWild).join('/') || (spec.startsWith('/') ? '/' : '.');
  const re = globRegExp(parts.slice(firstWild).join('/'));
  let files: string[];
  try {
    files = await walk(base);
  } catch (err) {
    throw new HiermemError('E_IO', `${spec}: cannot list ${base}: ${(err as Error).message}`, { cause: err });
  }
  return files.filter((f) => re.test(path.relative(base, f).split(path.sep).join('/'))).sort();
}

function globRegExp(pattern: string): RegExp {
  let re = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (c === '*' && pattern[i + 1] === '*') {
      re += pattern[i + 2] === '/' ? '(?:.*/)?' : '.*';
      i += pattern[i + 2] === '/' ? 2 : 1;
    } else if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else if (c === '[') {
      const end = pattern.indexOf(']', i + 1);
      if (end < 0) re += '\\[';
      else {
        re += '[' + pattern.slice(i + 1, end).replace(/^!/, '^').replace(/\\/g, '\\\\') + ']';
        i = end;
      }
    } else re += c.replace(/[.+^${}()|\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

/** The format a file is read as: the one asked for, or by its extension. */
export function formatOf(file: string, format: CorpusFormat): Exclude<CorpusFormat, 'auto'> {
  if (format !== 'auto') return format;
  const name = file.toLowerCase().replace(/\.gz$/, '');
  if (/\.(jsonl|ndjson|json)$/.test(name)) return 'jsonl';
  if (name.endsWith('.parquet')) return 'parquet';
  return 'text';
}
