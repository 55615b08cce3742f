/**
 * The open-weight section (issue #15, `--only=hf`): an imported Hugging Face Llama model with
 * grouped-query attention (nKvHeads = nHeads / 4) at about the 3.4M and 10M shapes, the SAME
 * weights run by hiermem and by a plain-PyTorch Llama (bench/peers/torch_llama.py), alternating in
 * the same window of machine time (bench/measure.ts); and the Hugging Face tokenizer's throughput.
 *
 *   1. The model folder is written by scripts/make-llama-fixture.py --shape (random float32
 *      weights, Hugging Face names and config.json) and read by our importer (loadHfModel); the
 *      peer reads the same model.safetensors.
 *   2. Generation first (pristine weights): greedy decoding with a KV cache on both sides after the
 *      same prompt; the prompt's logits are compared and the greedy tokens must agree.
 *   3. Training: the loss of the same batch agrees before any step and again after one
 *      zeroGrad + forward + backward + clip + AdamW step on both sides (so the timed work is the
 *      same computation); then tokens/s of that step, batch 8 x seq 256, at 2 threads and 1.
 *   4. Tokenizer: encode MB/s of @huggingface/tokenizers (lib/data/hf-tokenizer.ts) with a
 *      byte-level BPE trained on the demo corpus (the `hiermem tokenizer train` trainer), one
 *      thread (encode is synchronous JavaScript).
 */
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { performance } from 'node:perf_hooks';
import { loadNative, packageRoot } from '../lib/native.js';
import { loadHfModel } from '../lib/io/hf-import.js';
import type { AnchorModel, Batch } from '../lib/model/anchor.js';
import { AdamW, DEFAULT_ADAMW } from '../lib/train/adamw.js';
import { buildDemoCorpus } from '../lib/data/facts.js';
import { trainByteLevelBpe } from '../lib/data/hf-tokenizer-train.js';
import { writeSafetensors, type TensorToWrite } from '../lib/io/safetensors.js';
import { Rng } from '../lib/util/random.js';
import { peerRow, type ContractRow } from './contract.js';
import { measure, ourRunner, type Measured, type Runner } from './measure.js';
import { IdleWaiter, OPENMP_BLAS_DIR, PYTHON, argmax, ensureTorch, maxRel, stat, timeGreedyDecode } from './peer-common.js';

/** Hugging Face config.json fields of the two shapes (Llama, tied head, nKvHeads = nHeads / 4). */
export const HF_BENCH_SHAPES: Record<string, Record<string, number>> = {
  '3.4M-gqa': { hidden_size: 256, num_hidden_layers: 4, num_attention_heads: 8, head_dim: 32, num_key_value_heads: 2, intermediate_size: 1024 },
  '10M-gqa': { hidden_size: 384, num_hidden_layers: 6, num_attention_heads: 8, head_dim: 48, num_key_value_heads: 2, intermediate_size: 1024 },
};
const VOCAB = 8192;
const SEQ = 256;
const BATCH = 8;
const LR = 1e-4;
const PROMPT = 128;
/** Token-embedding scale of the random model: tied-head logits of O(1), loss near ln(vocab), as in a trained model (not saturated softmaxes). */
const EMBED_STD = 0.05;
const TRAIN_TARGET = 1.5;
const GENERATE_TARGET = 2;
/** Loss agreement (relative) before and after one optimizer step: float32 sums in another order. */
const LOSS_TOL = 1e-4;

export interface HfBenchOptions {
  quick: boolean;
  /** Thread counts, the first one the machine's (rows without a -t suffix). */
  threads: number[];
  install: boolean;
  log: (s: string) => void;
}

/** One equivalence check: ours and the peer's value (for the logits: the max-norm relative difference, and 0), their relative difference. */
export interface HfCheck { label: string; what: string; ours: number; peer: number; rel: number; pass: boolean }

export interface HfBenchResult {
  rows: ContractRow[];
  checks: HfCheck[];
  markdown: string;
  peer: Record<string, unknown>;
}

type Reply = Record<string, unknown> & { ok: boolean; error?: string };

/** bench/peers/torch_llama.py over JSON lines, one request at a time. */
class LlamaPeer {
  private readonly waiting: ((r: Reply) => void)[] = [];
  private stderr = '';
  private exited: string | null = null;

  constructor(private readonly proc: ChildProcessWithoutNullStreams) {
    createInterface({ input: proc.stdout }).on('line', (line) => this.waiting.shift()?.(JSON.parse(line) as Reply));
    proc.stderr.on('data', (d: Buffer) => { this.stderr = (this.stderr + d.toString()).slice(-3000); });
    proc.on('exit', (code) => {
      this.exited = `PyTorch Llama peer exited (${code}): ${this.stderr.trim()}`;
      for (const w of this.waiting.splice(0)) w({ ok: false, error: this.exited });
    });
  }

  static start(threads: number): LlamaPeer {
    const env: NodeJS.ProcessEnv = { ...process.env, OMP_NUM_THREADS: String(threads), PYTHONUNBUFFERED: '1' };
    if (fs.existsSync(path.join(OPENMP_BLAS_DIR, 'libopenblas.so.0'))) env.LD_LIBRARY_PATH = [OPENMP_BLAS_DIR, process.env.LD_LIBRARY_PATH].filter(Boolean).join(':');
    delete env.OPENBLAS_NUM_THREADS;
    const script = path.join(packageRoot(), 'bench', 'peers', 'torch_llama.py');
    return new LlamaPeer(spawn(PYTHON, [script, '--serve'], { env, stdio: ['pipe', 'pipe', 'pipe'] }));
  }

  request(req: Record<string, unknown>): Promise<Reply> {
    if (this.exited) return Promise.reject(new Error(this.exited));
    return new Promise((resolve, reject) => {
      this.waiting.push((r) => (r.ok ? resolve(r) : reject(new Error(`PyTorch Llama peer, ${String(req.cmd)}: ${r.error ?? 'failed'}`))));
      this.proc.stdin.write(JSON.stringify(req) + '\n');
    });
  }

  close(): void {
    if (this.exited) return;
    this.proc.stdin.end();
    setTimeout(() => this.proc.kill('SIGKILL'), 5000).unref();
  }
}

const relDiff = (a: number, b: number): number => Math.abs(a - b) / Math.max(Math.abs(b), 1e-30);
const fmt = (x: number, d = 0): string => x.toLocaleString('en-US', { minimumFractionDigits: d, maximumFractionDigits: d });

function randomTokens(rng: Rng, n: number): Int32Array {
  const t = new Int32Array(n);
  for (let i = 0; i < n; i++) t[i] = rng.int(VOCAB);
  return t;
}

/** The demo corpus's documents, a byte-level BPE trained on them (written to `file`), and encode MB/s. */
async function tokenizerRow(o: HfBenchOptions, file: string): Promise<{ row: ContractRow; line: string }> {
  const texts = buildDemoCorpus({ seed: 1 }).documents.map((d) => d.text);
  const bytes = texts.reduce((a, t) => a + Buffer.byteLength(t), 0);
  const trained = await trainByteLevelBpe(texts, { vocabSize: VOCAB });
  fs.writeFileSync(file, JSON.stringify(trained.json));
  const tok = trained.tokenizer;
  let tokens = 0;
  for (const t of texts) tokens += tok.encode(t).length; // warm-up (JIT, caches)
  const rates: number[] = [];
  for (let r = 0; r < (o.quick ? 3 : 7); r++) {
    const t0 = performance.now();
    for (const t of texts) tok.encode(t);
    rates.push(bytes / 1e6 / ((performance.now() - t0) / 1000));
  }
  const dec = texts.map((t) => tok.encode(t));
  const d0 = performance.now();
  for (const ids of dec) tok.decode(ids);
  const decodeRate = bytes / 1e6 / ((performance.now() - d0) / 1000);
  const s = stat(rates);
  const version = (JSON.parse(fs.readFileSync(path.join(packageRoot(), 'node_modules', '@huggingface', 'tokenizers', 'package.json'), 'utf8')) as { version: string }).version;
  const note = `@huggingface/tokenizers ${version} encode, one thread, byte-level BPE of ${trained.vocabSize} tokens (${trained.merges} merges; asked ${VOCAB}, the corpus had no more) trained on the demo corpus ` +
    `(${texts.length} documents, ${fmt(bytes / 1e6, 2)} MB, ${fmt(bytes / tokens, 2)} bytes/token); median of ${rates.length} passes [${fmt(s.min, 2)}–${fmt(s.max, 2)}]; decode ${fmt(decodeRate, 1)} MB/s`;
  o.log(`  hf tokenizer: encode ${fmt(s.median, 2)} MB/s, decode ${fmt(decodeRate, 1)} MB/s (${trained.vocabSize} tokens, ${fmt(bytes / tokens, 2)} bytes/token)`);
  return {
    row: peerRow('hf-tokenizer-encode', 'MB/s', s.median, null, null, null, { spread: s.spread, note }),
    line: `| tokenizer encode (demo corpus, ${fmt(bytes / 1e6, 2)} MB) | ${fmt(s.median, 2)} MB/s [${fmt(s.min, 2)}–${fmt(s.max, 2)}] | decode ${fmt(decodeRate, 1)} MB/s |`,
  };
}

interface ShapeResult { rows: ContractRow[]; checks: HfCheck[]; lines: string[] }

async function shapeRows(name: string, dir: string, tokenizerFile: string, o: HfBenchOptions, peer: LlamaPeer, idle: IdleWaiter): Promise<ShapeResult> {
  const native = loadNative();
  const folder = path.join(dir, name);
  const hf = { ...HF_BENCH_SHAPES[name]!, vocab_size: VOCAB, max_position_embeddings: SEQ, rope_theta: 10000, bos_token_id: 0, eos_token_id: 0 };
  const gen = spawnSync(PYTHON, [path.join(packageRoot(), 'scripts', 'make-llama-fixture.py'), '--shape', folder, JSON.stringify(hf), '7', String(EMBED_STD)], { encoding: 'utf8', timeout: 300_000 });
  if (gen.status !== 0) throw new Error(`make-llama-fixture.py --shape failed: ${gen.stderr}`);
  fs.copyFileSync(tokenizerFile, path.join(folder, 'tokenizer.json'));
  const loaded = await loadHfModel(folder, { seqLen: SEQ, maxBatch: BATCH });
  const model: AnchorModel = loaded.model;
  const cfg = loaded.config;
  const params = model.paramCount;
  const rows: ContractRow[] = [];
  const checks: HfCheck[] = [];
  const lines: string[] = [];
  const t = (n: number): string => (n === os.availableParallelism() ? '' : `-t${n}`);
  const shapeText = `d ${cfg.dModel}, ${cfg.nLayers} layers, ${cfg.nHeads} heads x ${cfg.headDim}, ${cfg.nKvHeads} kv heads, ffn ${cfg.ffnHidden}, vocab ${cfg.vocabSize} tied, ${fmt(params / 1e6, 2)}M params`;
  try {
    await peer.request({ cmd: 'load', dir: folder });
    const rng = new Rng(11);

    // ---- generation (pristine weights) ----
    const prompt = randomTokens(rng, PROMPT);
    const G = o.quick ? 16 : 64;
    const peerLogits = Float32Array.from((await peer.request({ cmd: 'prompt', prompt: Array.from(prompt), threads: o.threads[0] })).logits as number[]);
    const promptRel = maxRel(model.nextTokenLogits(prompt), peerLogits).rel;
    checks.push({ label: name, what: 'prompt logits (max-norm relative)', ours: promptRel, peer: 0, rel: promptRel, pass: promptRel < 1e-4 });
    let oursTokens: number[] = [];
    let peerTokens: number[] = [];
    const genOurs: Runner = async (n) => {
      const r = timeGreedyDecode(() => model.decoder(), prompt, G, n);
      oursTokens = r.tokens;
      return { ms: r.ms, cpuMs: r.cpuMs };
    };
    const inferTiming = { reps: o.quick ? 3 : 5, warmup: 1, seconds: o.quick ? 0.3 : 0.8 };
    for (const th of o.threads) {
      native.setNumThreads(th);
      const genPeer: Runner = async (n) => {
        let ms = 0, cpuMs = 0;
        for (let c = 0; c < n; c++) {
          const r = await peer.request({ cmd: 'generate', new: G, threads: th });
          ms += Number(r.ms);
          cpuMs += Number(r.cpuMs);
          peerTokens = r.tokens as number[];
        }
        return { ms, cpuMs };
      };
      const m = await measure(`hf generate ${name} threads=${th}`, G, [{ name: 'hiermem', run: genOurs }, { name: 'pytorch', run: genPeer }], th, inferTiming, idle);
      let agree = 0;
      while (agree < Math.min(oursTokens.length, peerTokens.length) && oursTokens[agree] === peerTokens[agree]) agree++;
      if (th === o.threads[0]) checks.push({ label: name, what: `greedy tokens agree (of ${G})`, ours: agree, peer: G, rel: 1 - agree / G, pass: agree === G });
      rows.push(peerRow(`hf-generate-${name}${t(th)}`, 'tokens/s', m.sides[0]!.perSec.median, 'pytorch-cpu-kvcache', m.sides[1]!.perSec.median, GENERATE_TARGET, {
        spread: m.sides[0]!.perSec.spread,
        note: `imported Llama (${shapeText}); greedy, ${G} tokens after a ${PROMPT}-token prompt, batch 1, KV cache on both sides; ${th} thread(s); greedy tokens agree ${agree}/${G}; ` +
          `paired ratio ${fmt(m.paired[0]!.min, 2)}–${fmt(m.paired[0]!.max, 2)}; CPU share ${fmt(100 * m.sides[0]!.cpuShare)}% / ${fmt(100 * m.sides[1]!.cpuShare)}%; others busy ${fmt(m.busyCoresBefore, 2)} cores, load ${fmt(m.loadAvg1, 2)}`,
      }));
      lines.push(line(`generate ${name}`, th, m, GENERATE_TARGET, `${agree}/${G} greedy`));
      o.log(`  hf generate ${name} threads=${th}: ${summary(m)}; greedy agree ${agree}/${G}`);
    }

    // ---- training ----
    const batches: Batch[] = [];
    const files: TensorToWrite[] = [];
    for (let i = 0; i < 4; i++) {
      const b = { tokens: randomTokens(rng, BATCH * SEQ), targets: randomTokens(rng, BATCH * SEQ), batchSize: BATCH };
      batches.push(b);
      files.push({ name: `${i}.tokens`, dtype: 'I32', shape: [BATCH, SEQ], data: b.tokens }, { name: `${i}.targets`, dtype: 'I32', shape: [BATCH, SEQ], data: b.targets });
    }
    const bfile = path.join(dir, `${name}.batches.safetensors`);
    await writeSafetensors(bfile, files, { count: String(batches.length) });
    const a = DEFAULT_ADAMW;
    await peer.request({ cmd: 'batches', file: bfile, hp: { lr: LR, weightDecay: a.weightDecay, beta1: a.beta1, beta2: a.beta2, eps: a.eps, clipNorm: a.clipNorm } });
    const opt = new AdamW(model);
    let k = 0;
    const stepOurs = async (): Promise<number> => {
      const b = batches[k++ % batches.length]!;
      model.zeroGrad();
      const loss = await model.forwardBackward(b);
      await opt.step(model, LR);
      return loss;
    };
    native.setNumThreads(o.threads[0]!);
    const loss0 = await model.loss(batches[0]!);
    const peer0 = Number((await peer.request({ cmd: 'loss', index: 0, threads: o.threads[0] })).loss);
    checks.push({ label: name, what: 'loss of batch 0, step 0', ours: loss0, peer: peer0, rel: relDiff(loss0, peer0), pass: relDiff(loss0, peer0) < LOSS_TOL });
    await stepOurs();
    await peer.request({ cmd: 'train', steps: 1, threads: o.threads[0] });
    const loss1 = await model.loss(batches[0]!);
    const peer1 = Number((await peer.request({ cmd: 'loss', index: 0, threads: o.threads[0] })).loss);
    checks.push({ label: name, what: 'loss of batch 0 after one AdamW step', ours: loss1, peer: peer1, rel: relDiff(loss1, peer1), pass: relDiff(loss1, peer1) < LOSS_TOL });
    o.log(`  hf check ${name}: loss ${loss0.toFixed(6)} vs ${peer0.toFixed(6)} (rel ${relDiff(loss0, peer0).toExponential(1)}); after one step ${loss1.toFixed(6)} vs ${peer1.toFixed(6)} ` +
      `(rel ${relDiff(loss1, peer1).toExponential(1)}); prompt logits rel ${promptRel.toExponential(1)}`);
    const trainTiming = o.quick ? { reps: 3, warmup: 1, seconds: 0.3 } : { reps: 5, warmup: 1, seconds: 1 };
    for (const th of o.threads) {
      native.setNumThreads(th);
      const peerRun: Runner = async (n) => {
        const r = await peer.request({ cmd: 'train', steps: n, threads: th });
        return { ms: Number(r.ms), cpuMs: Number(r.cpuMs) };
      };
      const m = await measure(`hf train ${name} threads=${th}`, BATCH * SEQ, [{ name: 'hiermem', run: await ourRunner(stepOurs) }, { name: 'pytorch', run: peerRun }], th, trainTiming, idle);
      rows.push(peerRow(`hf-train-step-${name}${t(th)}`, 'tokens/s', m.sides[0]!.perSec.median, 'pytorch-cpu', m.sides[1]!.perSec.median, TRAIN_TARGET, {
        spread: m.sides[0]!.perSec.spread,
        note: `imported Llama (${shapeText}); zeroGrad + forward + backward + clip + AdamW, batch ${BATCH} x seq ${SEQ}; ${th} thread(s); ${m.callsPerRep} steps x ${trainTiming.reps} reps per side; ` +
          `paired ratio ${fmt(m.paired[0]!.min, 2)}–${fmt(m.paired[0]!.max, 2)}; CPU share ${fmt(100 * m.sides[0]!.cpuShare)}% / ${fmt(100 * m.sides[1]!.cpuShare)}%; others busy ${fmt(m.busyCoresBefore, 2)} cores, load ${fmt(m.loadAvg1, 2)}`,
      }));
      lines.push(line(`train ${name}`, th, m, TRAIN_TARGET, `loss rel ${relDiff(loss0, peer0).toExponential(1)} / ${relDiff(loss1, peer1).toExponential(1)}`));
      o.log(`  hf train ${name} threads=${th}: ${summary(m)}`);
    }
    fs.rmSync(bfile, { force: true });
  } finally {
    model.dispose();
    fs.rmSync(folder, { recursive: true, force: true });
  }
  return { rows, checks, lines };
}

function summary(m: Measured): string {
  const [a, b] = m.sides;
  return `hiermem ${fmt(a!.perSec.median)} tok/s, PyTorch ${fmt(b!.perSec.median)} tok/s, ratio ${(a!.perSec.median / b!.perSec.median).toFixed(2)} ` +
    `(paired ${m.paired[0]!.min.toFixed(2)}–${m.paired[0]!.max.toFixed(2)}; others busy ${m.busyCoresBefore.toFixed(2)} cores)`;
}

function line(what: string, threads: number, m: Measured, target: number, check: string): string {
  const [a, b] = m.sides;
  const r = a!.perSec.median / b!.perSec.median;
  return `| ${what} | ${threads} | ${fmt(a!.perSec.median)} [${fmt(a!.perSec.min)}–${fmt(a!.perSec.max)}] | ${fmt(b!.perSec.median)} [${fmt(b!.perSec.min)}–${fmt(b!.perSec.max)}] | ` +
    `**${r.toFixed(2)}** (${m.paired[0]!.min.toFixed(2)}–${m.paired[0]!.max.toFixed(2)}) | ≥ ${target} ${r >= target ? 'met' : 'missed'} | ${check} | ${fmt(m.loadAvg1, 2)} |`;
}

/** The section's rows (bench/run.ts `--only=hf`). Without PyTorch only the tokenizer row is measured. */
export async function hfRows(o: HfBenchOptions): Promise<HfBenchResult> {
  const native = loadNative();
  const saved = native.getNumThreads();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hiermem-bench-hf-'));
  const rows: ContractRow[] = [];
  const checks: HfCheck[] = [];
  const lines: string[] = [];
  let peerInfo: Record<string, unknown> = {};
  let peer: LlamaPeer | null = null;
  try {
    const tokFile = path.join(dir, 'tokenizer.json');
    const tr = await tokenizerRow(o, tokFile);
    rows.push(tr.row);
    const avail = ensureTorch(o.install);
    if (!avail.ok) {
      o.log(`  hf: ${avail.message}`);
      peerInfo = { unavailable: avail.message };
    } else {
      peer = LlamaPeer.start(o.threads[0]!);
      const { ok: _ok, ...hello } = await peer.request({ cmd: 'hello', threads: o.threads[0] });
      peerInfo = avail.message ? { ...hello, note: avail.message } : hello;
      const idle = new IdleWaiter(o.quick ? 2 : 5, o.quick ? 10 : 60);
      for (const name of o.quick ? ['3.4M-gqa'] : Object.keys(HF_BENCH_SHAPES)) {
        const r = await shapeRows(name, dir, tokFile, o, peer, idle);
        rows.push(...r.rows);
        checks.push(...r.checks);
        lines.push(...r.lines);
      }
    }
    const md = ['| what | threads | hiermem tokens/s median [min–max] | PyTorch tokens/s | ratio (paired min–max) | target | check | load (1 min) |', '|---|---:|---:|---:|---:|---:|---|---:|', ...lines,
      '', '| tokenizer | encode | decode |', '|---|---:|---:|', tr.line,
      '', '| check | value | pass |', '|---|---|---|', ...checks.map((c) => `| ${c.label}: ${c.what} | ${c.what.startsWith('loss') ? `${c.ours.toFixed(6)} vs ${c.peer.toFixed(6)}, rel ${c.rel.toExponential(1)}` : c.what.startsWith('greedy') ? `${c.ours}/${c.peer}` : c.rel.toExponential(1)} | ${c.pass ? 'yes' : '**NO**'} |`)];
    return { rows, checks, markdown: md.join('\n'), peer: peerInfo };
  } finally {
    peer?.close();
    native.setNumThreads(saved);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
