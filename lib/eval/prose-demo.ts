/**
 * The natural-prose experiment (`hiermem demo prose`): on Brown corpus openings and WordNet
 * hypernym families (lib/data/prose-corpus.ts), train a byte-level BPE on the training split,
 * cluster the training documents, pretrain the anchor and continue it as anchor / generic /
 * fetched / dense2x exactly as the facts demo (lib/eval/demo.ts) does; then score held-out
 * documents (each routed by its own text) by perplexity and bits per byte, overall and per
 * cluster-frequency bucket (lib/eval/prose-buckets.ts), the rarest buckets' training documents
 * (memorisation), and the fetched model with each held-out document's level-1 subtree blocked.
 *
 * The results keep the facts demo's shape (DemoResults): where it has accuracies, this experiment
 * puts the geometric-mean probability of the next token, 1 / perplexity (higher is better, in
 * [0, 1]); the perplexity fields are added beside them.
 */
import { HiermemError } from '../errors.js';
import { ByteTokenizer, type Tokenizer } from '../data/tokenizer.js';
import { trainByteLevelBpe } from '../data/hf-tokenizer-train.js';
import { buildProseCorpus, type ProseCorpus } from '../data/prose-corpus.js';
import { packByLeaf } from '../data/packing.js';
import type { ModelConfig } from '../model/config.js';
import type { ProgressEvent } from '../train/trainer.js';
import type { RunOptions } from '../train/run.js';
import { GENERIC_PATH, type HierarchicalModel } from '../memory/memory-model.js';
import { RetrievalTree } from '../retrieval/tree.js';
import { pretrainDemoAnchor, type DemoRun } from './demo-runs.js';
import { DEMO_PLANS, machineName, type DemoOptions, type DemoPlan, type DemoResults, type ModelReport } from './demo.js';
import { anchorPerplexityModel, evaluatePerplexity, memoryPerplexityModel, type PerplexityModel, type PerplexityStats } from './perplexity.js';
import { bucketNames, leafBuckets, pooledStats, routingPurity, statsPerBucket } from './prose-buckets.js';

export interface ProsePlan extends DemoPlan {
  /** Tokens of the trained BPE (bytes and specials included). */
  vocabSize: number;
  /** At most this many training documents of the rarest buckets are scored for memorisation (evenly spaced over them in corpus order). */
  memorisationDocs: number;
}

export const PROSE_PLANS: Record<'default' | 'quick', ProsePlan> = {
  default: { ...DEMO_PLANS.default, pretrainSteps: 300, continueSteps: 300, vocabSize: 2048, memorisationDocs: 1000 },
  quick: { ...DEMO_PLANS.quick, pretrainSteps: 60, continueSteps: 60, vocabSize: 1024, memorisationDocs: 60 },
};

/** The two rarest buckets: the target pools them. */
export const PROSE_RARE = ['B4', 'B5'] as const;

export interface PerplexityReport {
  overall: PerplexityStats;
  /** B1 (leaves with the most training text) .. B5 (the least). */
  buckets: PerplexityStats[];
  /** Pooled over PROSE_RARE. */
  rare: PerplexityStats;
}

export interface ProseModelReport extends ModelReport {
  /** Held-out documents. */
  perplexity: PerplexityReport;
  /** Training documents of the rarest buckets, with the paths they trained with (what was memorised). */
  memorisation: { buckets: PerplexityStats[]; rare: PerplexityStats };
}

export interface ProseDemoResults extends DemoResults {
  experiment: 'prose';
  corpus: Omit<DemoResults['corpus'], 'buckets'> & {
    /** bytes of all documents' text; tokens: training-split tokens of the tokenizer below. */
    bytes: number;
    trainDocuments: number;
    heldOutDocuments: number;
    heldOutTokens: number;
    sources: ProseCorpus['stats']['sources'];
    /** elements: leaves; minFreq / maxFreq: training tokens of its smallest / largest leaf. */
    buckets: Array<{ name: string; elements: number; minFreq: number; maxFreq: number; trainTokens: number; heldOut: number; trainDocuments: number }>;
  };
  tokenizer: { kind: 'bpe' | 'bytes'; vocabSize: number; merges: number; seconds: number; note?: string };
  models: ProseModelReport[];
  blocked: DemoResults['blocked'] & { perplexity: PerplexityReport };
  plan: ProsePlan;
}

/** A BPE from Hugging Face's trainer; where its optional native package is missing, bytes (recorded in the results). */
export async function proseTokenizer(texts: readonly string[], vocabSize: number): Promise<{ tok: Tokenizer; info: ProseDemoResults['tokenizer'] }> {
  const t0 = performance.now();
  try {
    const r = await trainByteLevelBpe(texts, { vocabSize });
    return { tok: r.tokenizer, info: { kind: 'bpe', vocabSize: r.vocabSize, merges: r.merges, seconds: (performance.now() - t0) / 1000 } };
  } catch (e) {
    if (!(e instanceof HiermemError) || e.code !== 'E_BACKEND_UNAVAILABLE') throw e;
    const tok = new ByteTokenizer();
    return { tok, info: { kind: 'bytes', vocabSize: tok.vocabSize, merges: 0, seconds: (performance.now() - t0) / 1000,
      note: 'the optional package "tokenizers" (Hugging Face\'s BPE trainer) is not installed, so this run used byte tokens: npm install tokenizers@0.23.2 for the BPE' } };
  }
}

/** Results of runProseDemo (the facts demo's have no `experiment`). */
export function isProseResults(r: DemoResults): r is ProseDemoResults {
  return (r as Partial<ProseDemoResults>).experiment === 'prose';
}

const inverse = (s: PerplexityStats) => (s.tokens ? 1 / s.perplexity : 0);
const accuracyBuckets = (buckets: readonly PerplexityStats[]) => buckets.map((b) => ({ name: b.name, accuracy: inverse(b), n: b.documents }));

export interface ProseDemoOptions extends DemoOptions {
  /** Changes to the plan `quick` picks (experiments with other sizes; the CLI uses the plans as they are). */
  plan?: Partial<ProsePlan>;
}

export async function runProseDemo(o: ProseDemoOptions): Promise<ProseDemoResults> {
  const t0 = performance.now();
  const plan: ProsePlan = { ...PROSE_PLANS[o.quick ? 'quick' : 'default'], ...o.plan };
  const phase = (s: string) => o.onPhase?.(s);
  const p = plan.tree.p;

  phase('corpus');
  const corpus = buildProseCorpus({ seed: o.seed, quick: o.quick });
  const trainTexts = corpus.train.map((d) => d.text), heldTexts = corpus.heldOut.map((d) => d.text);

  phase('tokenizer');
  const { tok, info: tokInfo } = await proseTokenizer(trainTexts, plan.vocabSize);
  if (tokInfo.note) phase(`tokenizer: ${tokInfo.note}`);
  const docs = trainTexts.map((t) => tok.encode(t));

  phase('cluster');
  const { tree, paths } = await RetrievalTree.fitTexts(trainTexts, { k: plan.tree.k, p, seed: o.seed });
  const heldPaths = await tree.assignTexts(heldTexts);
  const lb = leafBuckets(paths, p, docs.map((d) => d.length));
  const heldBuckets = bucketNames(lb, heldPaths, p), trainBuckets = bucketNames(lb, paths, p);
  const routing = routingPurity(paths, corpus.train.map((d) => d.group), heldPaths, corpus.heldOut.map((d) => d.group), p);
  // memorisation: the training documents of the rarest buckets (evenly spaced, both sources, if more than the plan's cap)
  const rareIdx = trainBuckets.map((b, i) => [b, i] as const).filter(([b]) => (PROSE_RARE as readonly string[]).includes(b)).map(([, i]) => i);
  const nMem = Math.min(rareIdx.length, plan.memorisationDocs);
  const memIdx = Array.from({ length: nMem }, (_, j) => rareIdx[Math.floor((j * rareIdx.length) / nMem)]!);
  const memDocs = memIdx.map((i) => ({ text: trainTexts[i]!, bucket: trainBuckets[i]! }));
  const memPaths = new Int32Array(memIdx.length * p);
  memIdx.forEach((i, j) => memPaths.set(paths.subarray(i * p, (i + 1) * p), j * p));
  const heldDocs = heldTexts.map((text, i) => ({ text, bucket: heldBuckets[i]! }));

  const seqs = packByLeaf({ docs, paths, levels: p }, { seqLen: plan.model.seqLen, eotId: tok.eotId, padId: tok.padId ?? tok.eotId });
  const cfg: ModelConfig = { ...plan.model, vocabSize: tok.vocabSize, seed: o.seed };
  const progress = (name: string) => (e: ProgressEvent) => o.onProgress?.(name, e);
  const runOptions: Omit<RunOptions, 'anchor'> = { tokenizer: tok, batchSize: plan.batchSize, seed: o.seed, weightDecay: 0.1, data: { packed: seqs } };

  /** Held-out and memorisation perplexity of a model; `mem` maps a document set's paths to the model to score with. */
  const score = async (name: string, mem: (docPaths: Int32Array) => PerplexityModel, heldRoutes = heldPaths, memorisation = true) => {
    phase(`eval ${name}`);
    const total = heldDocs.length + (memorisation ? memDocs.length : 0);
    const held = await evaluatePerplexity(heldDocs, tok, mem(heldRoutes), { onProgress: (d) => o.onEvalProgress?.(`eval ${name}`, d, total) });
    const perplexity: PerplexityReport = { overall: held.overall, buckets: statsPerBucket(held.documents),
      rare: pooledStats('rare', held.documents.filter((d) => (PROSE_RARE as readonly string[]).includes(d.bucket ?? ''))) };
    if (!memorisation || memDocs.length === 0) return { perplexity, memorisation: { buckets: statsPerBucket([]), rare: pooledStats('rare', []) } };
    const train = await evaluatePerplexity(memDocs, tok, mem(memPaths),
      { onProgress: (d) => o.onEvalProgress?.(`eval ${name}`, heldDocs.length + d, total) });
    return { perplexity, memorisation: { buckets: statsPerBucket(train.documents), rare: pooledStats('rare', train.documents) } };
  };
  const report = (name: ModelReport['name'], params: ModelReport['params'], s: Awaited<ReturnType<typeof score>>, trainSeconds: number,
                  losses: ModelReport['losses']): ProseModelReport => ({
    name, params, overall: inverse(s.perplexity.overall), buckets: accuracyBuckets(s.perplexity.buckets), rare: inverse(s.perplexity.rare),
    trainSeconds, losses, ...s,
  });

  const runs = await pretrainDemoAnchor({ plan, cfg, tree, seed: o.seed, signal: o.signal, runOptions, phase, progress });
  const models: ProseModelReport[] = [];
  const scored = async (name: ModelReport['name'], run: DemoRun<unknown>, mem: (docPaths: Int32Array) => PerplexityModel) =>
    models.push(report(name, run.params, await score(name, mem), run.trainSeconds, run.losses));

  // 2a. the anchor alone, continued
  const a = await runs.anchor();
  await scored('anchor', a, () => anchorPerplexityModel(a.model));

  // 2b/2c. generic memory only, and fetched memories
  const memoryRun = async (name: 'generic' | 'fetched'): Promise<HierarchicalModel> => {
    const run = await runs.memory(name);
    const hm = run.model;
    await scored(name, run, (docPaths) => memoryPerplexityModel(hm, name === 'generic' ? new Int32Array(docPaths.length).fill(GENERIC_PATH) : docPaths));
    return hm;
  };
  await memoryRun('generic');
  const fetched = await memoryRun('fetched');

  // blocking: every held-out document routed around its own level-1 subtree
  const blockedPaths = await tree.assignTexts(heldTexts, { avoidLevel1: true });
  const blockedScore = await score('blocked', (docPaths) => memoryPerplexityModel(fetched, docPaths), blockedPaths, false);

  // 2d. a dense model with ~2x the anchor's parameters, all the steps from scratch
  const dense = await runs.dense2x();
  await scored('dense2x', dense, () => anchorPerplexityModel(dense.model));

  if (models.length !== 4) throw new HiermemError('E_INVALID_ARGUMENT', 'prose demo produced an incomplete set of models');
  const heldOutTokens = heldTexts.reduce((n, s) => n + tok.encode(s).length, 0);
  return {
    experiment: 'prose',
    corpus: {
      documents: corpus.stats.documents,
      tokens: docs.reduce((n, d) => n + d.length, 0),
      bytes: corpus.stats.bytes,
      trainDocuments: corpus.train.length,
      heldOutDocuments: corpus.heldOut.length,
      heldOutTokens,
      sources: corpus.stats.sources,
      buckets: lb.summary.map((b) => ({ name: b.name, elements: b.leaves, minFreq: b.minTokens, maxFreq: b.maxTokens, trainTokens: b.trainTokens,
        heldOut: heldBuckets.filter((x) => x === b.name).length, trainDocuments: trainBuckets.filter((x) => x === b.name).length })),
      probes: corpus.heldOut.length,
      facts: 0,
    },
    tokenizer: tokInfo,
    routing: { accuracy: routing, k: plan.tree.k, p },
    models,
    blocked: { overall: inverse(blockedScore.perplexity.overall), rare: inverse(blockedScore.perplexity.rare),
      buckets: accuracyBuckets(blockedScore.perplexity.buckets), perplexity: blockedScore.perplexity },
    seconds: (performance.now() - t0) / 1000,
    machine: machineName(),
    seed: o.seed,
    quick: o.quick,
    plan,
  };
}

