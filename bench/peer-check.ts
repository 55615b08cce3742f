/**
 * Equivalence of hiermem and the PyTorch peer (bench/peers/torch_model.py), checked before any
 * timing: our initial weights go to PyTorch as a safetensors checkpoint (saveCheckpoint), both
 * sides compute the loss and every parameter gradient of the same batch, and we compare:
 *   loss: |ours - peer| / |peer| < 1e-5;
 *   each gradient: max |ours - peer| / max |peer| < 1e-3 ("max-norm relative");
 * for the anchor alone and for anchor + FFN memories (blocks fetched from a RAM MemoryBank whose
 * down rows hold random values, so the memories change the loss; the gradient of the fetched
 * buffer is compared too). Optionally also one AdamW step (anchor only): relative L2 difference of
 * the two parameter updates.
 *
 * CLI: node dist/bench/peer-check.js [--install]   (exit 0 = all pass, 1 = a mismatch, 2 = no torch)
 * Used by bench/peer-train.ts (before timing) and test/peer-torch.test.ts.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { AnchorModel, type Batch } from '../lib/model/anchor.js';
import { type ModelConfig, resolveModelConfig } from '../lib/model/config.js';
import { ByteTokenizer } from '../lib/data/tokenizer.js';
import { AdamW, DEFAULT_ADAMW } from '../lib/train/adamw.js';
import { saveCheckpoint } from '../lib/train/checkpoint.js';
import { readSafetensors, writeSafetensors, type TensorToWrite } from '../lib/io/safetensors.js';
import { MemoryBank } from '../lib/memory/bank.js';
import { HierarchicalModel, NO_MEMORY_PATH, slotsOf } from '../lib/memory/memory-model.js';
import { layerToMemory, resolveMemorySpec } from '../lib/memory/spec.js';
import { loadNative } from '../lib/native.js';
import { Rng } from '../lib/util/random.js';
import { TorchPeer, ensureTorch, maxRel, treePaths } from './peer-common.js';

export const LOSS_TOL = 1e-5;
export const GRAD_TOL = 1e-3;

export interface MemoryCheckSpec {
  k: number;
  levels: number[];
  layers?: number[];
  /** Distinct paths among the batch's sequences. */
  distinct: number;
  /** The last `noMemory` sequences use no memory (path -2): exercises the peer's subset path. */
  noMemory?: number;
}

export interface EquivalenceOptions {
  label: string;
  config: ModelConfig;
  batchSize: number;
  memory?: MemoryCheckSpec | null;
  /** Pack several documents per sequence (per-document RoPE positions and attention mask). */
  docStart?: boolean;
  /** Fraction of targets set to -1 (not scored). */
  ignoreFraction?: number;
  /** Also compare one AdamW step (anchor only). */
  step?: boolean;
  seed?: number;
  /** Scratch directory for the exchanged files. */
  dir: string;
}

export interface TensorDiff {
  name: string;
  rel: number;
  maxAbs: number;
}

export interface EquivalenceResult {
  label: string;
  params: number;
  batch: string;
  lossOurs: number;
  lossPeer: number;
  lossRel: number;
  /** Loss of the same batch without memories (memory rows): shows that the memories matter. */
  lossWithoutMemory?: number;
  worstGrad: TensorDiff;
  /** Median over tensors of the max-norm relative gradient difference. */
  medianGradRel: number;
  grads: TensorDiff[];
  fetchedGrad?: TensorDiff;
  /** ||Δours − Δpeer||₂ / ||Δpeer||₂ over all parameters after one AdamW step. */
  stepRelL2?: number;
  pass: boolean;
  msOurs: number;
  msPeer: number;
}

function randomBatch(rng: Rng, B: number, T: number, V: number, docs: boolean, ignore: number): Batch {
  const tokens = new Int32Array(B * T);
  const targets = new Int32Array(B * T);
  for (let i = 0; i < B * T; i++) {
    tokens[i] = rng.int(V);
    targets[i] = rng.uniform() < ignore ? -1 : rng.int(V);
  }
  let docStart: Int32Array | null = null;
  if (docs) {
    docStart = new Int32Array(B * T);
    for (let b = 0; b < B; b++) {
      let start = 0;
      let next = 1 + rng.int(Math.max(1, T >> 1));
      for (let t = 0; t < T; t++) {
        if (t === next) {
          start = t;
          next = t + 1 + rng.int(Math.max(1, T >> 1));
        }
        docStart[b * T + t] = start;
      }
    }
  }
  return { tokens, targets, docStart, batchSize: B };
}

/** Writes random down rows (std 1/sqrt(d)) into the blocks the paths touch, so memories change the output. */
export function randomizeDownRows(bank: MemoryBank, slotPaths: Int32Array, rng: Rng): void {
  bank.gather(slotPaths); // initialises the blocks (gate/up from the bank's seed)
  const p = bank.levels;
  const Lm = bank.spec.layers.length;
  const d = bank.dModel;
  const done = new Set<string>();
  for (let s = 0; s < slotPaths.length / p; s++) {
    for (let l = 0; l < p; l++) {
      const r = bank.spec.levels[l]!;
      const node = slotPaths[s * p + l]!;
      if (r === 0 || done.has(`${l}:${node}`)) continue;
      done.add(`${l}:${node}`);
      const blk = bank.readBlock(l, node);
      for (let j = 0; j < Lm; j++) {
        const off = (j * 3 + 2) * r * d;
        for (let i = 0; i < r * d; i++) blk[off + i] = rng.normal() / Math.sqrt(d);
      }
      bank.writeBlock(l, node, blk);
    }
  }
}

const i32 = (name: string, shape: number[], data: Int32Array): TensorToWrite => ({ name, dtype: 'I32', shape, data });
const f32 = (name: string, shape: number[], data: Float32Array): TensorToWrite => ({ name, dtype: 'F32', shape, data });

export async function checkEquivalence(peer: TorchPeer, o: EquivalenceOptions, threads?: number): Promise<EquivalenceResult> {
  const cfg = o.config;
  const B = o.batchSize;
  const T = cfg.seqLen;
  const rng = new Rng(o.seed ?? 11);
  const base = AnchorModel.create(cfg, { maxBatch: B });
  const ckpt = path.join(o.dir, `${o.label}.ckpt.safetensors`);
  await saveCheckpoint(ckpt, { model: base, tokenizer: new ByteTokenizer() });
  const batch = randomBatch(rng, B, T, cfg.vocabSize, o.docStart ?? false, o.ignoreFraction ?? 0.1);
  const files: TensorToWrite[] = [i32('tokens', [B, T], batch.tokens), i32('targets', [B, T], batch.targets)];
  if (batch.docStart) files.push(i32('doc_start', [B, T], batch.docStart));

  let model = base;
  let mem: { fetched: Float32Array; dfetched: Float32Array; seqSlot: Int32Array; numSlots: number } | null = null;
  let memLoad: { layerToMemory: number[]; R: number } | null = null;
  let bank: MemoryBank | null = null;
  if (o.memory) {
    const spec = resolveMemorySpec({ k: o.memory.k, levels: o.memory.levels, ...(o.memory.layers ? { layers: o.memory.layers } : {}) }, cfg);
    bank = MemoryBank.createInMemory(spec, cfg.dModel, { seed: 5 });
    const p = spec.levels.length;
    const paths = treePaths(rng, B, o.memory.k, p, o.memory.distinct);
    for (let b = B - (o.memory.noMemory ?? 0); b < B; b++) paths.fill(NO_MEMORY_PATH, b * p, (b + 1) * p);
    const { slotPaths, seqSlot } = slotsOf(paths, B, p);
    randomizeDownRows(bank, slotPaths, rng);
    const fetched = bank.gather(slotPaths);
    const S = slotPaths.length / p;
    mem = { fetched, dfetched: new Float32Array(fetched.length), seqSlot, numSlots: S };
    model = HierarchicalModel.fromAnchor(base, bank, B).anchor;
    memLoad = { layerToMemory: Array.from(layerToMemory(spec, cfg.nLayers)), R: bank.unitsPerLayer };
    files.push(f32('fetched', [S, spec.layers.length, 3, bank.unitsPerLayer, cfg.dModel], fetched), i32('seq_slot', [B], seqSlot));
  }
  const batchFile = path.join(o.dir, `${o.label}.batch.safetensors`);
  await writeSafetensors(batchFile, files);

  // ours
  const p0 = Float32Array.from(model.params);
  model.zeroGrad();
  let t0 = performance.now();
  const lossOurs = model.forwardBackwardSync({ ...batch, memory: mem });
  const msOurs = performance.now() - t0;
  const lossWithoutMemory = mem ? base.lossSync(batch) : undefined;
  const lr = 1e-3;
  let oursDelta: Float32Array | null = null;
  const gradsOurs = Float32Array.from(model.grads);
  if (o.step && !mem) {
    new AdamW(model).stepSync(model, lr);
    oursDelta = model.params.map((v, i) => v - p0[i]!);
  }

  // the peer
  const out = path.join(o.dir, `${o.label}.peer.safetensors`);
  await peer.request({ cmd: 'load', ckpt, memory: memLoad, ...(threads ? { threads } : {}) });
  t0 = performance.now();
  const step = o.step && !mem
    ? { lr, weightDecay: DEFAULT_ADAMW.weightDecay, beta1: DEFAULT_ADAMW.beta1, beta2: DEFAULT_ADAMW.beta2, eps: DEFAULT_ADAMW.eps, clipNorm: DEFAULT_ADAMW.clipNorm }
    : null;
  const reply = await peer.request({ cmd: 'grads', batch: batchFile, out, step });
  const msPeer = performance.now() - t0;
  const got = (await readSafetensors(out)).tensors;
  const lossPeer = Number(reply.loss);

  const grads: TensorDiff[] = model.layout.map((s) => {
    const theirs = got.get(`grad.${s.name}`)?.data as Float32Array | undefined;
    if (!theirs) throw new Error(`peer did not return grad.${s.name}`);
    const d = maxRel(gradsOurs.subarray(s.offset, s.offset + s.size), theirs);
    return { name: s.name, rel: d.rel, maxAbs: d.maxAbs };
  });
  const worstGrad = grads.reduce((a, b) => (b.rel > a.rel ? b : a));
  const sortedRel = grads.map((g) => g.rel).sort((a, b) => a - b);
  let fetchedGrad: TensorDiff | undefined;
  if (mem) {
    const theirs = got.get('grad.memory.fetched')!.data as Float32Array;
    const d = maxRel(mem.dfetched, theirs);
    fetchedGrad = { name: 'memory.fetched', rel: d.rel, maxAbs: d.maxAbs };
  }
  let stepRelL2: number | undefined;
  if (oursDelta) {
    let num = 0;
    let den = 0;
    for (const s of model.layout) {
      const after = got.get(`param.${s.name}`)!.data as Float32Array;
      for (let i = 0; i < s.size; i++) {
        const dp = after[i]! - p0[s.offset + i]!;
        const diff = oursDelta[s.offset + i]! - dp;
        num += diff * diff;
        den += dp * dp;
      }
    }
    stepRelL2 = Math.sqrt(num / den);
  }
  const lossRel = Math.abs(lossOurs - lossPeer) / Math.abs(lossPeer);
  const pass = lossRel < LOSS_TOL && worstGrad.rel < GRAD_TOL && (fetchedGrad ? fetchedGrad.rel < GRAD_TOL : true);
  if (model !== base) model.dispose();
  base.dispose();
  bank?.close();
  for (const f of [ckpt, batchFile, out]) fs.rmSync(f, { force: true });
  const result: EquivalenceResult = {
    label: o.label,
    params: base.paramCount,
    batch: `B ${B} x T ${T}${batch.docStart ? ', packed documents' : ''}${mem ? `, memory R ${memLoad!.R} in ${o.memory!.layers?.length ?? cfg.nLayers} layers, ${mem.numSlots} distinct paths${o.memory!.noMemory ? `, ${o.memory!.noMemory} sequence(s) without memory` : ''}` : ''}`,
    lossOurs,
    lossPeer,
    lossRel,
    worstGrad,
    medianGradRel: sortedRel[sortedRel.length >> 1]!,
    grads,
    pass,
    msOurs,
    msPeer,
  };
  if (lossWithoutMemory !== undefined) result.lossWithoutMemory = lossWithoutMemory;
  if (fetchedGrad) result.fetchedGrad = fetchedGrad;
  if (stepRelL2 !== undefined) result.stepRelL2 = stepRelL2;
  return result;
}

export function describe(r: EquivalenceResult): string {
  const e = (x: number): string => x.toExponential(2);
  return `${r.pass ? 'PASS' : 'FAIL'} ${r.label} (${(r.params / 1e6).toFixed(2)}M, ${r.batch}): loss ours ${r.lossOurs.toFixed(6)} ` +
    `peer ${r.lossPeer.toFixed(6)} rel ${e(r.lossRel)}` +
    (r.lossWithoutMemory !== undefined ? ` (without memory ${r.lossWithoutMemory.toFixed(6)})` : '') +
    `; grads worst ${e(r.worstGrad.rel)} (${r.worstGrad.name}), median ${e(r.medianGradRel)}` +
    (r.fetchedGrad ? `; fetched-buffer grad ${e(r.fetchedGrad.rel)}` : '') +
    (r.stepRelL2 !== undefined ? `; AdamW step update rel L2 ${e(r.stepRelL2)}` : '');
}

/** A small config that runs in well under a second on each side. */
export const CHECK_CONFIG = resolveModelConfig({
  vocabSize: ByteTokenizer.VOCAB_SIZE, dModel: 64, nLayers: 3, nHeads: 4, headDim: 16, ffnHidden: 192, seqLen: 48, seed: 3,
});

/** The standard set: anchor (plain and packed documents, with an AdamW step) and anchor + memories. */
export async function standardChecks(peer: TorchPeer, dir: string, config: ModelConfig = CHECK_CONFIG): Promise<EquivalenceResult[]> {
  const out: EquivalenceResult[] = [];
  out.push(await checkEquivalence(peer, { label: 'anchor', config, batchSize: 4, step: true, dir }));
  out.push(await checkEquivalence(peer, { label: 'anchor-packed', config, batchSize: 4, docStart: true, step: true, dir }));
  out.push(await checkEquivalence(peer, {
    label: 'memory', config, batchSize: 6, dir, memory: { k: 4, levels: [8, 0, 4], distinct: 3 },
  }));
  out.push(await checkEquivalence(peer, {
    label: 'memory-partial', config, batchSize: 5, docStart: true, dir,
    memory: { k: 3, levels: [4, 6], layers: [0, 2], distinct: 2, noMemory: 1 },
  }));
  return out;
}

async function main(): Promise<void> {
  const install = process.argv.includes('--install');
  const avail = ensureTorch(install);
  if (!avail.ok) {
    process.stderr.write(`${avail.message}\n`);
    process.exit(2);
  }
  const threads = Math.min(2, os.availableParallelism());
  loadNative().setNumThreads(threads);
  const { peer, info } = await TorchPeer.start(threads);
  process.stderr.write(`PyTorch ${info.torch} (${info.threads} threads, BLAS ${info.blas.join(', ') || '?'})\n`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hiermem-peer-check-'));
  try {
    const results = await standardChecks(peer, dir);
    for (const r of results) process.stdout.write(describe(r) + '\n');
    process.exitCode = results.every((r) => r.pass) ? 0 : 1;
  } finally {
    peer.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((e: unknown) => {
    process.stderr.write(`${e instanceof Error ? e.stack ?? e.message : String(e)}\n`);
    process.exit(1);
  });
}
