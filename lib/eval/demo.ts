/**
 * The long-tail knowledge experiment (paper Fig. 1, at our scale): on the embedded facts corpus,
 * pretrain the anchor, then continue from it on the same tokens and seed as
 *   anchor   — the anchor alone (more training, no memory)
 *   generic  — anchor + one generic memory of the fetched size (same active parameters, no retrieval)
 *   fetched  — anchor + hierarchical FFN memories, path from the retriever
 *   dense2x  — a dense model with about twice the anchor's parameters, trained on all the tokens
 * and score every model on the fact probes per frequency bucket, memory retrieved from the prompt.
 * "blocked" re-scores the fetched model with each prompt's level-1 subtree routed around.
 */
import os from 'node:os';
import { HiermemError } from '../errors.js';
import { ByteTokenizer } from '../data/tokenizer.js';
import { buildDemoCorpus, type DemoCorpus } from '../data/facts.js';
import { packByLeaf } from '../data/packing.js';
import type { ModelConfig } from '../model/config.js';
import type { ProgressEvent } from '../train/trainer.js';
import type { RunOptions } from '../train/run.js';
import { GENERIC_PATH } from '../memory/memory-model.js';
import { RetrievalTree } from '../retrieval/tree.js';
import { scoreProbes, type Probe, type ProbeResult } from './probes.js';
import { pretrainDemoAnchor, type DemoRun } from './demo-runs.js';
import type { NextTokenLogits } from '../model/generate.js';

export interface DemoOptions {
  seed: number;
  quick: boolean;
  /** Progress of long phases: (phase, event). */
  onProgress?: (phase: string, e: ProgressEvent) => void;
  onPhase?: (phase: string) => void;
  /** Probe scoring progress: (phase, probes done, probes in all). */
  onEvalProgress?: (phase: string, done: number, total: number) => void;
  signal?: AbortSignal;
}

/** The knobs of one demo size; the defaults were tuned on this 2-core machine (see README). */
export interface DemoPlan {
  model: Omit<ModelConfig, 'vocabSize' | 'seed'>;
  dense2x: Omit<ModelConfig, 'vocabSize' | 'seed'>;
  batchSize: number;
  pretrainSteps: number;
  continueSteps: number;
  pretrainLr: number;
  continueLr: number;
  memoryLrScale: number;
  tree: { k: number; p: number };
  levels: number[];
}

const BASE_MODEL = { dModel: 128, nLayers: 2, nHeads: 4, headDim: 32, ffnHidden: 384, seqLen: 128, normEps: 1e-5, ropeBase: 1e5 };

export const DEMO_PLANS: Record<'default' | 'quick', DemoPlan> = {
  default: {
    model: BASE_MODEL,
    dense2x: { ...BASE_MODEL, dModel: 192, nHeads: 6, ffnHidden: 576 },
    batchSize: 32,
    pretrainSteps: 200,
    continueSteps: 200,
    pretrainLr: 3e-3,
    continueLr: 1e-3,
    memoryLrScale: 2,
    tree: { k: 8, p: 2 },
    levels: [16, 48],
  },
  quick: {
    model: BASE_MODEL,
    dense2x: { ...BASE_MODEL, dModel: 192, nHeads: 6, ffnHidden: 576 },
    batchSize: 16,
    pretrainSteps: 80,
    continueSteps: 80,
    pretrainLr: 3e-3,
    continueLr: 1e-3,
    memoryLrScale: 2,
    tree: { k: 4, p: 2 },
    levels: [16, 48],
  },
};

export interface ModelReport {
  name: 'anchor' | 'generic' | 'fetched' | 'dense2x';
  params: { anchor: number; fetched: number; bank: number; active: number };
  overall: number;
  buckets: Array<{ name: string; accuracy: number; n: number }>;
  /** Accuracy pooled over the three rarest buckets. */
  rare: number;
  trainSeconds: number;
  losses: { steps: number[]; losses: number[] };
}

export interface DemoResults {
  corpus: {
    documents: number;
    tokens: number;
    buckets: Array<{ name: string; elements: number; minFreq: number; maxFreq: number }>;
    probes: number;
    facts: number;
  };
  routing: { accuracy: number; k: number; p: number };
  models: ModelReport[];
  blocked: { overall: number; rare: number; buckets: Array<{ name: string; accuracy: number; n: number }> };
  seconds: number;
  machine: string;
  seed: number;
  quick: boolean;
  plan: DemoPlan;
}

function bucketsOf(r: ProbeResult): Array<{ name: string; accuracy: number; n: number }> {
  return r.buckets.map((b) => ({ name: b.name, accuracy: b.accuracy, n: b.n }));
}

/** Accuracy pooled over the probes of the given buckets. */
export function pooledAccuracy(buckets: ReadonlyArray<{ name: string; accuracy: number; n: number }>, names: readonly string[]): number {
  let ok = 0, n = 0;
  for (const b of buckets) if (names.includes(b.name)) { ok += b.accuracy * b.n; n += b.n; }
  return n ? ok / n : 0;
}

/** The machine a run's timings come from (CPU model, cores, memory, platform, node). */
export function machineName(): string {
  const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
  return `${cpu}, ${os.cpus().length} cores, ${Math.round(os.totalmem() / 2 ** 30)} GiB, ${process.platform}-${process.arch}, node ${process.versions.node}`;
}

/** The leaf holding most of each entity's documents. */
function majorityLeaves(corpus: DemoCorpus, paths: Int32Array, p: number): Map<string, number> {
  const counts = new Map<string, Map<number, number>>();
  corpus.documents.forEach((d, i) => {
    const leaf = paths[i * p + p - 1]!;
    const m = counts.get(d.entity) ?? new Map<number, number>();
    m.set(leaf, (m.get(leaf) ?? 0) + 1);
    counts.set(d.entity, m);
  });
  const out = new Map<string, number>();
  for (const [e, m] of counts) out.set(e, [...m.entries()].sort((a, b) => b[1] - a[1] || a[0] - b[0])[0]![0]);
  return out;
}

export async function runDemo(o: DemoOptions): Promise<DemoResults> {
  const t0 = performance.now();
  const plan = DEMO_PLANS[o.quick ? 'quick' : 'default'];
  const tok = new ByteTokenizer();
  const phase = (s: string) => o.onPhase?.(s);

  phase('corpus');
  const corpus = buildDemoCorpus({ seed: o.seed, quick: o.quick });
  const texts = corpus.documents.map((d) => d.text);
  const docs = texts.map((t) => tok.encode(t));

  phase('cluster');
  const { tree, paths } = await RetrievalTree.fitTexts(texts, { k: plan.tree.k, p: plan.tree.p, seed: o.seed });
  const probePaths = await tree.assignTexts(corpus.probes.map((p) => p.prompt));
  const p = plan.tree.p;
  const major = majorityLeaves(corpus, paths, p);
  let routed = 0;
  corpus.probes.forEach((pr, i) => { if (probePaths[i * p + p - 1] === major.get(pr.entity)) routed++; });

  const seqs = packByLeaf({ docs, paths, levels: p }, { seqLen: plan.model.seqLen, eotId: tok.eotId, padId: tok.padId });
  const cfg: ModelConfig = { ...plan.model, vocabSize: tok.vocabSize, seed: o.seed };
  const progress = (name: string) => (e: ProgressEvent) => o.onProgress?.(name, e);
  // every run sees the same packed sequences in the same order (seed)
  const runOptions: Omit<RunOptions, 'anchor'> = { tokenizer: tok, batchSize: plan.batchSize, seed: o.seed, weightDecay: 0.1, data: { packed: seqs } };
  const runs = await pretrainDemoAnchor({ plan, cfg, tree, seed: o.seed, signal: o.signal, runOptions, phase, progress });
  const probes: Probe[] = corpus.probes;
  const evalTick = (name: string) => (done: number) => o.onEvalProgress?.(name, done, probes.length);
  const reports: ModelReport[] = [];
  const scored = (name: ModelReport['name'], run: DemoRun<unknown>, res: ProbeResult): ModelReport =>
    ({ name, params: run.params, overall: res.overall, buckets: bucketsOf(res), rare: 0, trainSeconds: run.trainSeconds, losses: run.losses });

  // 2a. anchor alone, continued
  const a = await runs.anchor();
  phase('eval anchor');
  reports.push(scored('anchor', a, scoreProbes(probes, tok, () => (ctx) => a.model.nextTokenLogits(ctx), 12, evalTick('eval anchor'))));

  // 2b/2c. memory models: generic only, and fetched
  const memoryRun = async (name: 'generic' | 'fetched') => {
    const run = await runs.memory(name);
    const hm = run.model;
    phase(`eval ${name}`);
    const genericPath = new Int32Array(p).fill(GENERIC_PATH);
    const genericLogits = hm.logitsForPath(genericPath);
    const logitsFor = (_: Probe, i: number): NextTokenLogits =>
      name === 'generic' ? genericLogits : hm.logitsForPath(probePaths.subarray(i * p, (i + 1) * p));
    reports.push(scored(name, run, scoreProbes(probes, tok, logitsFor, 12, evalTick(`eval ${name}`))));
    return hm;
  };
  await memoryRun('generic');
  const fetchedModel = await memoryRun('fetched');

  // blocking: route every prompt around its own level-1 subtree
  phase('eval blocked');
  const blockedPaths = await tree.assignTexts(probes.map((pr) => pr.prompt), { avoidLevel1: true });
  const blocked = scoreProbes(probes, tok, (_, i) => fetchedModel.logitsForPath(blockedPaths.subarray(i * p, (i + 1) * p)), 12,
    evalTick('eval blocked'));

  // 2d. dense model with ~2x the anchor's parameters, all the tokens from scratch
  const dense = await runs.dense2x();
  phase('eval dense2x');
  reports.push(scored('dense2x', dense, scoreProbes(probes, tok, () => (ctx) => dense.model.nextTokenLogits(ctx), 12, evalTick('eval dense2x'))));

  if (reports.length !== 4) throw new HiermemError('E_INVALID_ARGUMENT', 'demo produced an incomplete set of models');
  const rareNames = corpus.buckets.slice(-3).map((b) => b.name);
  for (const r of reports) r.rare = pooledAccuracy(r.buckets, rareNames);
  return {
    corpus: {
      documents: corpus.stats.documents,
      tokens: corpus.stats.tokens,
      buckets: corpus.buckets.map((b) => ({ name: b.name, elements: b.entities, minFreq: b.minFreq, maxFreq: b.maxFreq })),
      probes: probes.length,
      facts: corpus.stats.facts,
    },
    routing: { accuracy: routed / probes.length, k: plan.tree.k, p: plan.tree.p },
    models: reports,
    blocked: { overall: blocked.overall, rare: pooledAccuracy(bucketsOf(blocked), rareNames), buckets: bucketsOf(blocked) },
    seconds: (performance.now() - t0) / 1000,
    machine: machineName(),
    seed: o.seed,
    quick: o.quick,
    plan,
  };
}
