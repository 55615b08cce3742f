/**
 * The data section (issue #17): the streaming pipeline on generated JSONL corpora of 10 MB, 100 MB
 * and (not with --quick) 1 GB. Every measured command is the CLI in a child process, so peak RSS is
 * that process's own (VmHWM from /proc/<pid>/status, polled; the prepare summary's maxRSS too).
 *
 * Rows: peak RSS of prepare (with a tree: tokenise, route, pack) and of the first training step per
 * size (< 1.5 GiB flat), prepare seconds (1 GB: <= 10 min), tokenise MB/s with 2 threads (prepare
 * without a tree, >= 100), route docs/s (cluster's assignment pass, 2 threads, >= 20,000), cluster
 * fit + assignment of 1M documents (<= 5 min; measured on the 100 MB corpus, extrapolated
 * linearly in the assignment, which is stated in the row), and training tokens/s from --data over
 * the in-memory path (>= 0.98).
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { packageRoot } from '../lib/native.js';
import { peerRow, type ContractRow } from './contract.js';

export interface DataBenchOptions { quick: boolean; log: (s: string) => void }

const CLI = path.join(packageRoot(), 'dist', 'lib', 'cli', 'main.js');
const MB = 1e6;

/** A text-like corpus: Zipf-distributed pseudo-words, documents about one of 64 topics, 20–250 words. */
export function writeSyntheticJsonl(file: string, bytes: number, seed = 1): { documents: number; bytes: number } {
  let s = seed >>> 0 || 1;
  const rnd = () => { s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0; return s / 4294967296; };
  const syl = ['ka', 'lo', 'mi', 'ne', 'ru', 'sa', 'ti', 'vo', 'ze', 'an', 'el', 'or', 'th', 'st', 'qu', 'ph', 'ia', 'on', 'is', 'um'];
  const vocab: string[] = [];
  for (let i = 0; i < 40_000; i++) {
    const n = 1 + Math.min(4, Math.floor(-Math.log(1 - rnd()) * 1.3));
    let w = '';
    for (let j = 0; j < n; j++) w += syl[Math.floor(rnd() * syl.length)];
    vocab.push(w);
  }
  // Zipf(1) over ranks through a 64k lookup table
  const table = new Uint32Array(1 << 16);
  const H = Math.log(vocab.length) + 0.5772;
  for (let i = 0, r = 1, acc = 1 / H; i < table.length; i++) {
    while (acc < (i + 1) / table.length && r < vocab.length) acc += 1 / (++r * H);
    table[i] = r - 1;
  }
  const topics = Array.from({ length: 64 }, () => Array.from({ length: 150 }, () => vocab[Math.floor(rnd() * vocab.length)]!));
  const fd = fs.openSync(file, 'w');
  let written = 0, documents = 0, buf: string[] = [], held = 0;
  try {
    while (written + held < bytes) {
      const topic = topics[Math.floor(rnd() * topics.length)]!;
      const n = 20 + Math.floor(rnd() * rnd() * 230);
      const words: string[] = [];
      for (let i = 0; i < n; i++) words.push(rnd() < 0.3 ? topic[Math.floor(rnd() * topic.length)]! : vocab[table[Math.floor(rnd() * table.length)]!]!);
      words[0] = words[0]![0]!.toUpperCase() + words[0]!.slice(1);
      const line = `{"id":${documents},"text":"${words.join(' ')}."}\n`;
      buf.push(line);
      held += line.length;
      documents++;
      if (held >= 4 << 20) { fs.writeSync(fd, buf.join('')); written += held; buf = []; held = 0; }
    }
    fs.writeSync(fd, buf.join(''));
    written += held;
  } finally {
    fs.closeSync(fd);
  }
  return { documents, bytes: written };
}

interface ChildResult { stdout: string; seconds: number; peakRssBytes: number }

/** Runs the CLI, polling its VmHWM (the kernel's peak resident set) until it exits. */
function runCli(args: string[]): Promise<ChildResult> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '', stderr = '', peak = 0;
    const poll = () => {
      try {
        const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${child.pid}/status`, 'utf8'));
        if (m) peak = Math.max(peak, Number(m[1]) * 1024);
      } catch { /* exited */ }
    };
    const timer = setInterval(poll, 50);
    child.stdout.on('data', (b: Buffer) => { stdout += b.toString(); poll(); });
    child.stderr.on('data', (b: Buffer) => { stderr += b.toString(); });
    child.on('error', reject);
    child.on('exit', (code) => {
      clearInterval(timer);
      if (code !== 0) reject(new Error(`hiermem ${args[0]} exited ${code}: ${stderr.slice(-2000)}`));
      else resolve({ stdout, seconds: (performance.now() - t0) / 1000, peakRssBytes: peak });
    });
  });
}

const lastJson = (s: string): Record<string, unknown> => JSON.parse(s.trim().split('\n').pop()!) as Record<string, unknown>;
const mib = (b: number) => b / 2 ** 20;
const fx = (x: number, d = 1) => x.toFixed(d);

export async function dataRows(o: DataBenchOptions): Promise<ContractRow[]> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hiermem-bench-data-'));
  const rows: ContractRow[] = [];
  try {
    const sizes: [string, number][] = o.quick ? [['10MB', 10 * MB]] : [['10MB', 10 * MB], ['100MB', 100 * MB], ['1GB', 1000 * MB]];
    const corpora = new Map<string, { file: string; documents: number; bytes: number }>();
    for (const [label, bytes] of sizes) {
      const file = path.join(dir, `corpus-${label}.jsonl`);
      const t0 = performance.now();
      corpora.set(label, { file, ...writeSyntheticJsonl(file, bytes, 7) });
      o.log(`data: generated ${label} (${corpora.get(label)!.documents.toLocaleString('en-US')} documents) in ${fx((performance.now() - t0) / 1000)} s`);
    }
    const small = corpora.get('10MB')!;
    const mid = corpora.get(o.quick ? '10MB' : '100MB')!;

    // cluster: fitted on a 20,000-document sample, then every document routed on 2 threads
    const tree = path.join(dir, 'tree.safetensors');
    const c = await runCli(['cluster', '--corpus', mid.file, '--k', '8', '--levels', '2', '--threads', '2', '--out', tree, '--json']);
    const cs = lastJson(c.stdout) as { documents: number; sampled: number; fitSeconds: number; assignSeconds: number; leavesUsed: number; largestOverMean: number };
    const routeRate = cs.documents / cs.assignSeconds;
    const million = cs.fitSeconds + 1e6 / routeRate;
    o.log(`data: cluster ${cs.documents} docs: fit ${fx(cs.fitSeconds)} s, assign ${fx(cs.assignSeconds)} s, ${mib(c.peakRssBytes).toFixed(0)} MiB`);
    rows.push(peerRow('data-route', 'docs/s', routeRate, null, null, 20_000, {
      lowerBound: true, met: routeRate >= 20_000,
      note: `cluster's assignment pass over ${cs.documents.toLocaleString('en-US')} documents (read, hashed TF-IDF embedding, greedy routing; 2 worker threads, k 8, 2 levels)`,
    }));
    rows.push(peerRow('data-cluster-1M', 's', million, null, null, 300, {
      upperBound: true, met: million <= 300,
      note: `extrapolated: fit on a ${cs.sampled.toLocaleString('en-US')}-document sample (${fx(cs.fitSeconds)} s, independent of corpus size) + 1M documents at the measured ${Math.round(routeRate)} docs/s; measured on ${cs.documents.toLocaleString('en-US')} documents in ${fx(c.seconds)} s wall (incl. the sampling pass); ${cs.leavesUsed} leaves used, largest ${fx(cs.largestOverMean, 2)}x the mean; peak RSS ${mib(c.peakRssBytes).toFixed(0)} MiB`,
    }));

    // tokenise only (no tree): MB/s with 2 threads
    const tok = await runCli(['prepare', '--corpus', mid.file, '--out', path.join(dir, 'tok'), '--threads', '2', '--no-progress', '--json']);
    const mbps = mid.bytes / MB / tok.seconds;
    rows.push(peerRow('data-tokenize', 'MB/s', mbps, null, null, 100, {
      lowerBound: true, met: mbps >= 100, note: `prepare without a tree, byte tokenizer, 2 threads, ${fx(mid.bytes / MB, 0)} MB JSONL in ${fx(tok.seconds)} s (process wall time incl. start-up); peak RSS ${mib(tok.peakRssBytes).toFixed(0)} MiB`,
    }));
    fs.rmSync(path.join(dir, 'tok'), { recursive: true, force: true });

    // the pipeline per size: prepare with the tree, then the first training step from --data
    for (const [label] of sizes) {
      const corpus = corpora.get(label)!;
      const out = path.join(dir, `data-${label}`);
      const p = await runCli(['prepare', '--corpus', corpus.file, '--tree', tree, '--seq-len', '64', '--out', out, '--threads', '2', '--no-progress', '--json']);
      const ps = lastJson(p.stdout) as { peakRssBytes: number; documents: number; tokens: number };
      const t = await runCli(['train', '--data', out, '--preset', 'tiny', '--steps', '1', '--batch-size', '8', '--eval-every', '1000', '--out', path.join(dir, `run-${label}`), '--no-progress', '--json']);
      const peak = Math.max(p.peakRssBytes, ps.peakRssBytes, t.peakRssBytes);
      o.log(`data: ${label}: prepare ${fx(p.seconds)} s ${mib(p.peakRssBytes).toFixed(0)} MiB; first step ${fx(t.seconds)} s ${mib(t.peakRssBytes).toFixed(0)} MiB`);
      rows.push(peerRow(`data-rss-${label}`, 'MiB', mib(peak), null, null, 1536, {
        upperBound: true, met: mib(peak) <= 1536,
        note: `prepare (tokenise + route + pack, tree k 8 x 2 levels, seqLen 64, 2 threads; ${ps.documents.toLocaleString('en-US')} documents, ${ps.tokens.toLocaleString('en-US')} tokens): ${mib(Math.max(p.peakRssBytes, ps.peakRssBytes)).toFixed(0)} MiB in ${fx(p.seconds)} s; train --data, first step (tiny, memory run): ${mib(t.peakRssBytes).toFixed(0)} MiB`,
      }));
      const target = label === '1GB' ? 600 : null;
      rows.push(peerRow(`data-prepare-${label}`, 's', p.seconds, null, null, target, {
        upperBound: true, met: target === null ? null : p.seconds <= target, note: `with the tree (routing every document); ${fx(corpus.bytes / MB / p.seconds)} MB/s`,
      }));
      fs.rmSync(path.join(dir, `run-${label}`), { recursive: true, force: true });
      if (label !== '10MB') fs.rmSync(out, { recursive: true, force: true });
    }

    // training tokens/s: --data (prepared without a tree: windows over the token stream) vs in memory, same corpus and steps
    const plain = path.join(dir, 'plain-10MB');
    await runCli(['prepare', '--corpus', small.file, '--out', plain, '--threads', '2', '--no-progress', '--json']);
    // the small preset (the default): a step long enough that tokens/s measures training, not start-up
    const trainArgs = ['--preset', 'small', '--steps', o.quick ? '15' : '40', '--batch-size', '8', '--eval-every', '100000', '--threads', '1', '--no-progress', '--json'];
    const tps = async (src: string[], out: string) => (lastJson((await runCli(['train', ...src, ...trainArgs, '--out', path.join(dir, out)])).stdout) as { tokensPerSec: number }).tokensPerSec;
    const disk: number[] = [], mem: number[] = [];
    for (let r = 0; r < (o.quick ? 1 : 3); r++) {
      disk.push(await tps(['--data', plain], `t-data-${r}`));
      mem.push(await tps(['--corpus', small.file, '--format', 'jsonl'], `t-mem-${r}`));
    }
    const med = (a: number[]) => [...a].sort((x, y) => x - y)[a.length >> 1]!;
    rows.push(peerRow('data-train-tokens', 'tokens/s', med(disk), 'hiermem-in-memory', med(mem), 0.98, {
      note: `small preset, batch 8, 1 thread, median of ${disk.length} runs each; --data ${disk.map((x) => x.toFixed(0)).join('/')}, --corpus ${mem.map((x) => x.toFixed(0)).join('/')}`,
    }));
    return rows;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
