/**
 * One training run set up from what its caller has: a new model, a checkpoint to resume or to take
 * the anchor from, or a model in hand; with or without memories; documents or already-packed
 * sequences. The CLI's `train` and the demo both start their runs here, so resume, tree loading,
 * packing, sampler and stepper construction exist once.
 */
import { mkdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { HiermemError } from '../errors.js';
import { AnchorModel, type Batch } from '../model/anchor.js';
import type { ModelConfig } from '../model/config.js';
import { generate } from '../model/generate.js';
import { limitVocab } from './limit-vocab.js';
import { checkSameTokenizer, type Tokenizer } from '../data/tokenizer.js';
import { encodeDocuments } from '../data/stream.js';
import { WindowSampler } from '../data/windows.js';
import { packByLeaf, PathBatchSampler, type SequenceSource } from '../data/packing.js';
import type { PreparedData } from '../data/prepared.js';
import { readSafetensorsHeader } from '../io/safetensors.js';
import { isHfModelDir, loadHfModel } from '../io/hf-import.js';
import { RetrievalTree } from '../retrieval/tree.js';
import { MemoryBank } from '../memory/bank.js';
import { HierarchicalModel, GENERIC_PATH, type PathBatch } from '../memory/memory-model.js';
import { memorySizes, resolveMemorySpec, type MemorySizes } from '../memory/spec.js';
import type { Backend, ResolvedBackend } from '../backend.js';
import { AdamW } from './adamw.js';
import { loadCheckpoint, type TrainerState } from './checkpoint.js';
import { trainLoop, anchorStepper, type Source, type Stepper, type TrainHistory, type TrainOptions } from './trainer.js';
import { memoryStepper, loadHierarchicalCheckpoint, type MemoryTrainOptions } from './memory-trainer.js';
import type { Communicator } from '../dist/communicator.js';
import { dataParallelReducers, rankSeed, rankTrainerState, rankZeroSaves } from '../dist/data-parallel.js';
import type { ShardPlan } from '../memory/shard-plan.js';
import { MANIFEST_KEY } from './shard-checkpoint.js';
import { checkShardedResume, prepareShardedRun, shardedLogitsForPath, type ShardedRunInput } from './shard-run.js';

/** The checkpoint `train --out DIR` writes: DIR/checkpoint.safetensors. */
export const CHECKPOINT_FILE = 'checkpoint.safetensors';
/** The retrieval tree a memory run keeps beside its checkpoint. */
export const TREE_FILE = 'tree.safetensors';

/**
 * A checkpoint named the way users name it: the file, or the run folder `train --out` wrote (its
 * checkpoint.safetensors). A folder without one → E_IO naming both; a missing path is left to the
 * loader, which reports it (E_IO).
 */
export async function resolveCheckpointPath(p: string): Promise<string> {
  let isDir = false;
  try {
    isDir = (await stat(p)).isDirectory();
  } catch {
    return p;
  }
  if (!isDir) return p;
  const file = path.join(p, CHECKPOINT_FILE);
  try {
    if ((await stat(file)).isFile()) return file;
  } catch {
    // reported below
  }
  throw new HiermemError('E_IO', `${p} is a folder without a ${CHECKPOINT_FILE} (give a checkpoint file, or the --out folder of a train run)`);
}

/** Where the anchor of a new run comes from (a resumed run brings its own). */
export type AnchorStart =
  /** A new model (the config's seed initialises it). */
  | { config: Partial<ModelConfig> & { vocabSize: number } }
  /** The weights of a checkpoint, with a fresh optimizer. */
  | { checkpoint: string }
  /**
   * A model in hand, and the optimizer state to continue with (absent: fresh). `fork`: train a copy
   * and leave `model` and `optimizer` as they are (a memory run always trains a copy).
   */
  | { model: AnchorModel; optimizer?: AdamW; fork?: boolean };

/** The memories of a new run (a resumed memory run brings its bank, and its tree from beside it). */
export interface MemoryRunOptions {
  /** A tree file written by `hiermem cluster`, or a tree in hand; its k and depth shape the bank. */
  tree: string | RetrievalTree;
  /** Hidden units per memory layer from each level's block, one per tree level. */
  levels: readonly number[];
  /** Keep the bank memory-mapped in this (new) file instead of RAM. */
  bankFile?: string;
  /** Seed of the bank's initialisation (default: the run's seed). */
  bankSeed?: number;
  /**
   * 'tree' (default): each sequence fetches its own path, and the generic memory with chance
   * 1/(k+1) (paper §4.5); 'generic': every sequence uses the generic memory only (no retrieval).
   */
  routing?: 'tree' | 'generic';
  /**
   * Indices of the layers that carry memories (default: all; the paper finds the last ones about as
   * good), or a function of the anchor's layer count giving them (the anchor may come from a file).
   */
  layers?: readonly number[] | ((nLayers: number) => readonly number[]);
}

/**
 * Training data: documents (held-out ones for validation), encoded into one stream for an anchor
 * run, routed by the tree and packed per leaf for a memory run; or sequences already packed per
 * leaf, sampled as they are.
 */
export type RunData =
  | { documents: { train: readonly string[]; val: readonly string[] } }
  | { packed: SequenceSource; valPacked?: SequenceSource }
  /** A folder `hiermem prepare` wrote, opened with this run's tokenizer (and tree): read from disk. */
  | { prepared: PreparedData };

export interface RunOptions {
  tokenizer: Tokenizer;
  batchSize: number;
  /** Data order (validation: seed + 1); also the bank's initialisation unless memory.bankSeed. */
  seed: number;
  /** AdamW weight decay of a fresh optimizer. */
  weightDecay: number;
  /** Default 'cpu'. */
  backend?: Backend;
  /** Continue this checkpoint (file or run folder): model, optimizer, step and data order; a memory checkpoint also its bank and tree. */
  resume?: string;
  /** The anchor of a new run; required unless resuming. */
  anchor?: AnchorStart;
  /** Train with memories (a resumed memory checkpoint needs none of this). */
  memory?: MemoryRunOptions;
  /** Mode and memory learning-rate / weight-decay settings of a memory run, new or resumed. */
  memoryTraining?: Partial<MemoryTrainOptions>;
  data: RunData;
  /** The run's output folder: a memory run keeps its tree there, beside its checkpoints. */
  outDir?: string;
  /**
   * Data-parallel across processes (lib/dist/): each rank samples its own batches (seed offset by
   * rank), gradients are averaged every step, rank 0 alone writes checkpoints. Absent or local: one process.
   */
  communicator?: Communicator;
  /**
   * A memory run under a communicator of several ranks: bank levels >= this tree level (1-based,
   * default 1) are sharded by subtree across the ranks (lib/train/shard-run.ts).
   */
  shardLevel?: number;
  /** A sharded memory run calls this after every step with what the step exchanged (benchmarks). */
  onShardedStep?: ShardedRunInput['onStep'];
}

export interface PreparedRun {
  /** The anchor being trained (host copy; synced from a device when training returns). */
  model: AnchorModel;
  optimizer: AdamW;
  /** Present for a memory run; `shardPlan` when its bank is sharded across ranks. */
  memory?: { hm: HierarchicalModel; tree: RetrievalTree; sizes: MemorySizes; shardPlan?: ShardPlan };
  /** The trainer state a resumed run continues from. */
  start?: TrainerState;
  /** The checkpoint file resumed, if any. */
  resumed?: string;
  backend: ResolvedBackend;
  train(o: Partial<TrainOptions> & { steps: number }): Promise<TrainHistory>;
  /** Greedy continuation of `prompt` (a memory model fetches the prompt's path once). */
  continuation(prompt: string, maxTokens: number): Promise<string>;
  /** Frees what a device holds (no-op on the CPU); the host model stays usable. */
  dispose(): void;
}

/** A copy of `model` and its optimizer state, so that training it leaves the original as it was. */
function forkAnchor(model: AnchorModel, optimizer: AdamW | undefined, weightDecay: number): { model: AnchorModel; optimizer: AdamW } {
  const m = AnchorModel.create(model.config, { maxBatch: model.maxBatch, skipInit: true });
  m.params.set(model.params);
  return { model: m, optimizer: optimizer ? AdamW.continuing(m, optimizer) : new AdamW(m, { weightDecay }) };
}

async function startAnchor(o: RunOptions): Promise<{ model: AnchorModel; optimizer?: AdamW }> {
  const a = o.anchor;
  if (a === undefined) throw new HiermemError('E_INVALID_ARGUMENT', 'a new run needs an anchor (a config, a checkpoint or a model)');
  if ('config' in a) return { model: AnchorModel.create(a.config, { maxBatch: o.batchSize }) };
  if ('checkpoint' in a) {
    // a Hugging Face model folder serves as it is (read as `hiermem import hf` would)
    if (await isHfModelDir(a.checkpoint)) return { model: (await loadHfModel(a.checkpoint, { maxBatch: o.batchSize, tokenizer: o.tokenizer })).model };
    const file = await resolveCheckpointPath(a.checkpoint);
    return { model: (await loadCheckpoint(file, { maxBatch: o.batchSize, withOptimizer: false, tokenizer: o.tokenizer })).model };
  }
  if (a.fork) return forkAnchor(a.model, a.optimizer, o.weightDecay);
  return { model: a.model, ...(a.optimizer ? { optimizer: a.optimizer } : {}) };
}

/** Sets up one run (see RunOptions); nothing is trained until `train` is called. */
export async function prepareRun(o: RunOptions): Promise<PreparedRun> {
  const resumed = o.resume !== undefined ? await resolveCheckpointPath(o.resume) : undefined;
  // A memory run: asked for, or resuming a checkpoint that names a bank.
  const header = resumed !== undefined ? await readSafetensorsHeader(resumed) : null;
  const dist = o.communicator !== undefined && o.communicator.kind !== 'local' ? o.communicator : undefined;
  if (o.memory !== undefined || header?.metadata.memory_bank !== undefined || header?.metadata[MANIFEST_KEY] !== undefined) {
    if (resumed !== undefined) checkShardedResume(resumed, header!.metadata, dist);
    return prepareMemoryRun(o, resumed, dist);
  }
  if (o.shardLevel !== undefined) throw new HiermemError('E_INVALID_ARGUMENT', 'a shard level applies to memory runs (--tree) only');
  // every rank its own data order; validation batches stay the same on every rank
  const seed = dist ? rankSeed(o.seed, dist.rank) : o.seed;

  let model: AnchorModel, optimizer: AdamW, start: TrainerState | undefined;
  if (resumed !== undefined) {
    const ck = await loadCheckpoint(resumed, { maxBatch: o.batchSize, tokenizer: o.tokenizer });
    model = ck.model;
    optimizer = ck.optimizer ?? new AdamW(model, { weightDecay: o.weightDecay });
    start = rankTrainerState(resumed, ck.trainer, dist); // data-parallel: this rank's own data order
  } else {
    const a = await startAnchor(o);
    model = a.model;
    optimizer = a.optimizer ?? new AdamW(model, { weightDecay: o.weightDecay });
  }
  const T = model.config.seqLen;
  let source: Source<Batch>, val: Source<Batch> | undefined;
  if ('documents' in o.data || 'prepared' in o.data) {
    // windows over the token stream, in memory or read from the prepared shards: the same draws
    const [trainStream, valStream] = 'documents' in o.data
      ? [encodeDocuments(o.data.documents.train, o.tokenizer), encodeDocuments(o.data.documents.val, o.tokenizer)]
      : [o.data.prepared.tokenStream('train'), o.data.prepared.tokenStream('val')];
    source = new WindowSampler(trainStream, T, start?.rngState ? Uint32Array.from(start.rngState) : seed);
    val = new WindowSampler(valStream.length > T + 1 ? valStream : trainStream, T, o.seed + 1);
  } else {
    source = new PathBatchSampler(o.data.packed, { seed, ...(start?.rngState ? { state: start.rngState } : {}) });
    val = o.data.valPacked ? new PathBatchSampler(o.data.valPacked, { seed: o.seed + 1 }) : undefined;
  }
  const local = anchorStepper(model, optimizer, o.tokenizer, { backend: o.backend, ...(dist ? dataParallelReducers(dist) : {}) });
  const stepper = dist ? rankZeroSaves(local, dist) : local;
  return finish(o.tokenizer, stepper, source, val, start, resumed, model, optimizer, undefined,
    async (prompt, maxTokens) => generate(limitVocab(model, o.tokenizer.vocabSize), o.tokenizer.encode(prompt), greedy(o.tokenizer, maxTokens)));
}

function greedy(tokenizer: Tokenizer, maxTokens: number) {
  return { maxTokens, temperature: 0, stopToken: tokenizer.eotId };
}

/** The run around a stepper and its data; `continueTokens` generates greedily from the trained model. */
function finish<B extends Batch>(
  tokenizer: Tokenizer, stepper: Stepper<B>, source: Source<B>, val: Source<B> | undefined, start: TrainerState | undefined,
  resumed: string | undefined, model: AnchorModel, optimizer: AdamW, memory: PreparedRun['memory'],
  continueTokens: (prompt: string, maxTokens: number) => Promise<Int32Array>,
): PreparedRun {
  return {
    model, optimizer, backend: stepper.backend ?? 'cpu',
    ...(memory ? { memory } : {}), ...(start ? { start } : {}), ...(resumed !== undefined ? { resumed } : {}),
    train: (t) => trainLoop(stepper, source, val, start, t, model.config.seqLen),
    continuation: async (prompt, maxTokens) => tokenizer.decode(await continueTokens(prompt, maxTokens)),
    dispose: () => stepper.dispose?.(),
  };
}

async function prepareMemoryRun(o: RunOptions, resumed: string | undefined, dist?: Communicator): Promise<PreparedRun> {
  let hm: HierarchicalModel, optimizer: AdamW, start: TrainerState | undefined, tree: RetrievalTree, treeFile: string | undefined;
  let shardResume: ShardedRunInput['resumed'];
  if (resumed !== undefined) {
    const ck = await loadHierarchicalCheckpoint(resumed, { maxBatch: o.batchSize, inRam: true, ...(dist ? { shardRanks: [dist.rank] } : {}) });
    if (ck.shards) shardResume = { manifest: ck.shards, ...(ck.trainer ? { trainer: ck.trainer } : {}) };
    checkSameTokenizer(ck.tokenizer, o.tokenizer, resumed);
    hm = ck.hm;
    optimizer = ck.optimizer ?? new AdamW(hm.anchor, { weightDecay: o.weightDecay });
    start = ck.trainer;
    treeFile = path.join(path.dirname(resumed), TREE_FILE);
    tree = await RetrievalTree.load(treeFile);
  } else {
    const m = o.memory!;
    const a = await startAnchor(o);
    if (typeof m.tree === 'string') {
      treeFile = m.tree;
      tree = await RetrievalTree.load(m.tree);
    } else {
      tree = m.tree;
    }
    if (m.levels.length !== tree.p) {
      const where = typeof m.tree === 'string' ? ` ${m.tree}` : '';
      throw new HiermemError('E_CONFIG_INCOMPATIBLE', `memory levels list ${m.levels.length} levels, the tree${where} has ${tree.p}`);
    }
    const spec = resolveMemorySpec({ k: tree.k, levels: [...m.levels], generic: true, ...(m.layers ? { layers: [...(typeof m.layers === 'function' ? m.layers(a.model.config.nLayers) : m.layers)] } : {}) }, a.model.config);
    const seed = m.bankSeed ?? o.seed;
    if (m.bankFile !== undefined && dist) throw new HiermemError('E_CONFIG_INCOMPATIBLE', 'a bank file is one process\'s: a sharded run keeps each rank\'s shard in RAM (drop --bank-file)');
    if (m.bankFile !== undefined) await mkdir(path.dirname(m.bankFile), { recursive: true });
    const bank = m.bankFile !== undefined
      ? await MemoryBank.createFile(m.bankFile, spec, a.model.config.dModel, { seed })
      : MemoryBank.createInMemory(spec, a.model.config.dModel, { seed });
    hm = HierarchicalModel.fromAnchor(a.model, bank, o.batchSize); // a copy of the anchor
    optimizer = a.optimizer ? AdamW.continuing(hm.anchor, a.optimizer) : new AdamW(hm.anchor, { weightDecay: o.weightDecay });
  }
  // eval and generate look for the tree beside the checkpoint
  if (o.outDir !== undefined && (dist === undefined || dist.rank === 0) && (treeFile === undefined || path.resolve(treeFile) !== path.resolve(o.outDir, TREE_FILE))) {
    await mkdir(o.outDir, { recursive: true });
    await tree.save(path.join(o.outDir, TREE_FILE));
  }

  let train: SequenceSource, valSeqs: SequenceSource | undefined;
  let docPaths: Int32Array | undefined;
  if ('documents' in o.data) {
    const padId = o.tokenizer.padId;
    if (padId === undefined) throw new HiermemError('E_INVALID_ARGUMENT', 'packing documents per leaf needs a tokenizer with a pad token');
    const pack = async (texts: readonly string[]) => {
      const paths = await tree.assignTexts(texts);
      docPaths ??= paths; // the training documents' (packed first): what a sharded run balances
      return packByLeaf({ docs: texts.map((t) => o.tokenizer.encode(t)), paths, levels: tree.p },
        { seqLen: hm.anchor.config.seqLen, eotId: o.tokenizer.eotId, padId });
    };
    train = await pack(o.data.documents.train);
    valSeqs = await pack(o.data.documents.val);
  } else if ('prepared' in o.data) {
    const m = o.data.prepared.manifest;
    if (m.packed === null || m.tree === null) throw new HiermemError('E_CONFIG_INCOMPATIBLE', `${o.data.prepared.dir} was prepared without a tree: prepare it with --tree for a memory run`);
    if (m.packed.seqLen !== hm.anchor.config.seqLen || m.tree.k !== tree.k || m.tree.p !== tree.p) {
      throw new HiermemError('E_CONFIG_INCOMPATIBLE', `${o.data.prepared.dir} holds sequences of ${m.packed.seqLen} tokens for a tree k ${m.tree.k}, p ${m.tree.p}; this run has seqLen ${hm.anchor.config.seqLen}, k ${tree.k}, p ${tree.p}`);
    }
    train = o.data.prepared.sequences('train');
    valSeqs = o.data.prepared.sequences('val');
  } else {
    train = o.data.packed;
    valSeqs = o.data.valPacked;
  }
  const generic = o.memory?.routing === 'generic';
  if (dist) {
    return shardedMemoryRun({
      hm, optimizer, tokenizer: o.tokenizer, comm: dist, train, ...(valSeqs ? { val: valSeqs } : {}), ...(docPaths ? { docPaths } : {}),
      ...(o.shardLevel !== undefined ? { shardLevel: o.shardLevel } : {}), seed: o.seed, genericOnly: generic,
      ...(shardResume ? { resumed: shardResume } : {}), ...(o.memoryTraining ? { memoryTraining: o.memoryTraining } : {}), ...(o.backend ? { backend: o.backend } : {}),
      ...(o.onShardedStep ? { onStep: o.onShardedStep } : {}),
    }, tree, resumed);
  }
  const sampler = new PathBatchSampler(train, { seed: o.seed, genericK: generic ? 0 : tree.k, ...(start?.rngState ? { state: start.rngState } : {}) });
  const source: Source<PathBatch> = generic
    ? { next: (b) => { const x = sampler.next(b); x.paths.fill(GENERIC_PATH); return x; }, rngState: () => sampler.rngState() }
    : sampler;
  const val = valSeqs ? new PathBatchSampler(valSeqs, { seed: o.seed + 1 }) : undefined;
  const stepper = memoryStepper(hm, optimizer, o.tokenizer, { ...o.memoryTraining, backend: o.backend });
  const sizes = memorySizes(hm.bank.spec, hm.anchor.config, hm.anchor.paramCount);
  return finish(o.tokenizer, stepper, source, val, start, resumed, hm.anchor, optimizer, { hm, tree, sizes },
    async (prompt, maxTokens) => {
      const route = generic ? new Int32Array(tree.p).fill(GENERIC_PATH) : await tree.assignText(prompt);
      return generate(limitVocab(hm.logitsForPath(route), o.tokenizer.vocabSize), o.tokenizer.encode(prompt), greedy(o.tokenizer, maxTokens));
    });
}

/** A memory run whose bank is sharded across the communicator's ranks (lib/train/shard-run.ts). */
async function shardedMemoryRun(x: ShardedRunInput, tree: RetrievalTree, resumed: string | undefined): Promise<PreparedRun> {
  const sh = await prepareShardedRun(x);
  const { hm, tokenizer } = x;
  const sizes = memorySizes(hm.bank.spec, hm.anchor.config, hm.anchor.paramCount);
  let last: string | undefined;
  const run = finish(tokenizer, sh.stepper, sh.source, sh.val, sh.start, resumed, hm.anchor, x.optimizer, { hm, tree, sizes, shardPlan: sh.plan },
    async (prompt, maxTokens) => {
      const route = x.genericOnly ? new Int32Array(tree.p).fill(GENERIC_PATH) : await tree.assignText(prompt);
      const g = await shardedLogitsForPath(hm, sh.plan, x.comm.rank, route, () => last);
      try {
        return generate(limitVocab(g.logits, tokenizer.vocabSize), tokenizer.encode(prompt), greedy(tokenizer, maxTokens));
      } finally {
        g.close();
      }
    });
  const train = run.train;
  return { ...run, train: (t) => { last = t.checkpointPath; return train(t); } };
}
