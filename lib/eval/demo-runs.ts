/**
 * The training schedule the two demos share (lib/eval/demo.ts, lib/eval/prose-demo.ts): pretrain
 * the anchor, then, on the same packed sequences and seed, continue a copy of it alone, with one
 * generic memory or with fetched memories, and train a dense model of about twice the anchor's
 * parameters on all the steps from scratch. Continued runs count the pretraining in their seconds
 * and losses. Scoring is each demo's own.
 */
import type { AnchorModel } from '../model/anchor.js';
import { anchorParamCount, type ModelConfig } from '../model/config.js';
import type { ProgressEvent, TrainHistory } from '../train/trainer.js';
import { prepareRun, type RunOptions } from '../train/run.js';
import type { HierarchicalModel } from '../memory/memory-model.js';
import type { RetrievalTree } from '../retrieval/tree.js';
import type { DemoPlan, ModelReport } from './demo.js';

export interface DemoRunsSetup {
  plan: DemoPlan;
  /** The anchor's config (vocabulary and seed filled in). */
  cfg: ModelConfig;
  tree: RetrievalTree;
  seed: number;
  signal?: AbortSignal;
  /** Every run sees these packed sequences in the same order (seed). */
  runOptions: Omit<RunOptions, 'anchor'>;
  phase: (name: string) => void;
  progress: (name: string) => (e: ProgressEvent) => void;
}

/** A trained model with what its report needs. */
export interface DemoRun<M> {
  model: M;
  params: ModelReport['params'];
  trainSeconds: number;
  losses: ModelReport['losses'];
}

export interface DemoRuns {
  /** 2a. the anchor alone, continued. */
  anchor(): Promise<DemoRun<AnchorModel>>;
  /** 2b/2c. generic memory only, or fetched memories (with the paper's 1/(k+1) generic mixing). */
  memory(name: 'generic' | 'fetched'): Promise<DemoRun<HierarchicalModel>>;
  /** 2d. the dense model with ~2x the anchor's parameters, all the steps from scratch. */
  dense2x(): Promise<DemoRun<AnchorModel>>;
}

const secondsSince = (t: number) => (performance.now() - t) / 1000;

/** 1. pretrains the anchor; the runs continued from it start when called. */
export async function pretrainDemoAnchor(s: DemoRunsSetup): Promise<DemoRuns> {
  const { plan, cfg, runOptions, phase, progress } = s;
  const common = { batchSize: plan.batchSize, evalEvery: 0, warmupSteps: 20, signal: s.signal };
  phase('pretrain');
  const pre = await prepareRun({ ...runOptions, anchor: { config: cfg } });
  const t = performance.now();
  const preHist = await pre.train({ ...common, steps: plan.pretrainSteps, lr: plan.pretrainLr, minLr: plan.pretrainLr / 10, onProgress: progress('pretrain') });
  const pretrainSeconds = secondsSince(t);
  // each continued run trains a copy of the pretrained anchor and its optimizer state
  const pretrained = { model: pre.model, optimizer: pre.optimizer };
  const contOpts = { ...common, steps: plan.continueSteps, lr: plan.continueLr, minLr: plan.continueLr / 10 };
  const anchorParams = anchorParamCount(cfg);
  const joinLosses = (h: TrainHistory) => ({
    steps: [...preHist.steps, ...h.steps.map((x) => x + plan.pretrainSteps)],
    losses: [...preHist.losses, ...h.losses],
  });

  return {
    async anchor() {
      phase('anchor');
      const a = await prepareRun({ ...runOptions, anchor: { ...pretrained, fork: true } });
      const t = performance.now();
      const hist = await a.train({ ...contOpts, onProgress: progress('anchor') });
      return { model: a.model, params: { anchor: anchorParams, fetched: 0, bank: 0, active: anchorParams },
        trainSeconds: pretrainSeconds + secondsSince(t), losses: joinLosses(hist) };
    },
    async memory(name) {
      phase(name);
      const run = await prepareRun({
        ...runOptions, anchor: pretrained,
        memory: { tree: s.tree, levels: plan.levels, bankSeed: s.seed + 17, routing: name === 'fetched' ? 'tree' : 'generic' },
        memoryTraining: { mode: 'cotrain', memoryLrScale: plan.memoryLrScale },
      });
      const { hm, sizes } = run.memory!;
      const t = performance.now();
      const hist = await run.train({ ...contOpts, onProgress: progress(name) });
      return { model: hm, params: { anchor: anchorParams, fetched: sizes.fetchedParams, bank: name === 'generic' ? sizes.fetchedParams : sizes.bankParams,
        active: anchorParams + sizes.fetchedParams }, trainSeconds: pretrainSeconds + secondsSince(t), losses: joinLosses(hist) };
    },
    async dense2x() {
      phase('dense2x');
      const dcfg: ModelConfig = { ...plan.dense2x, vocabSize: cfg.vocabSize, seed: s.seed };
      const dense = await prepareRun({ ...runOptions, anchor: { config: dcfg } });
      const t = performance.now();
      const hist = await dense.train({ ...common, steps: plan.pretrainSteps + plan.continueSteps, lr: plan.pretrainLr, minLr: plan.continueLr / 10,
        onProgress: progress('dense2x') });
      const params = anchorParamCount(dcfg);
      return { model: dense.model, params: { anchor: params, fetched: 0, bank: 0, active: params }, trainSeconds: secondsSince(t),
        losses: { steps: hist.steps, losses: hist.losses } };
    },
  };
}
