/**
 * `hiermem train`: reads the corpus, sets the run up (lib/train/run.ts), trains with a progress
 * bar, and writes metrics, the loss chart and the summary.
 */
import { mkdir, writeFile, appendFile } from 'node:fs/promises';
import path from 'node:path';
import cliProgress from 'cli-progress';
import { HiermemError } from '../errors.js';
import { loadNative } from '../native.js';
import { resolveBackend, type Backend, type ResolvedBackend } from '../backend.js';
import { MODEL_PRESETS, anchorParamCount, trainFlopsPerToken, resolveModelConfig, type ModelConfig } from '../model/config.js';
import { ByteTokenizer, tokenizerFromJSON, type Tokenizer } from '../data/tokenizer.js';
import { loadHfTokenizer } from '../data/hf-tokenizer.js';
import { isHfModelDir } from '../io/hf-import.js';
import { readCheckpointTokenizer } from '../train/checkpoint.js';
import { loadSampleCorpus, readJsonlDocuments, readTextDocuments, SAMPLE_CORPUS_PATH } from '../data/corpus.js';
import { splitDocuments } from '../data/stream.js';
import type { ProgressEvent, TrainHistory } from '../train/trainer.js';
import type { MemoryTrainMode } from '../train/memory-trainer.js';
import { CHECKPOINT_FILE, prepareRun, resolveCheckpointPath } from '../train/run.js';
import { lineChartSvg } from '../eval/svg.js';
import { PreparedData } from '../data/prepared.js';
import { IN_MEMORY_CORPUS_BYTES, corpusBytes, prepareTemporary } from '../data/auto-prepare.js';
import type { CorpusFormat } from '../data/readers/index.js';
import { readModelConfigFile } from '../io/model-config.js';
import { launcherWorldSize, type Communicator, type DistMode } from '../dist/communicator.js';
import { createCommunicator } from '../dist/data-parallel.js';

export async function loadDocs(corpus: string | undefined, format: string, field: string): Promise<string[]> {
  if (!corpus) return loadSampleCorpus();
  if (format === 'jsonl') return readJsonlDocuments(corpus, field);
  return readTextDocuments(corpus, { separator: format === 'lines' ? 'line' : 'blank-line' });
}

/**
 * --memory-layers: "0,3,5-7" (indices and ranges) or "last:N" (the last N layers) of a model of
 * nLayers layers. Anything else, or an index out of range → E_INVALID_ARGUMENT.
 */
export function parseLayerList(spec: string, nLayers: number): number[] {
  const bad = (why: string): never => { throw new HiermemError('E_INVALID_ARGUMENT', `--memory-layers "${spec}": ${why}`); };
  const last = /^last:(\d+)$/.exec(spec.trim());
  if (last) {
    const n = Number(last[1]);
    if (n < 1 || n > nLayers) bad(`the model has ${nLayers} layers`);
    return Array.from({ length: n }, (_, i) => nLayers - n + i);
  }
  const out = new Set<number>();
  for (const part of spec.split(',')) {
    const m = /^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$/.exec(part);
    if (!m) bad('give layer indices and ranges ("0,3,5-7") or "last:N"');
    const a = Number(m![1]), b = m![2] !== undefined ? Number(m![2]) : a;
    if (b < a || b >= nLayers) bad(`layers are 0..${nLayers - 1}`);
    for (let i = a; i <= b; i++) out.add(i);
  }
  return [...out].sort((x, y) => x - y);
}

export interface TrainFlags {
  corpus?: string; format: string; field: string; preset: string; steps: number; batchSize: number; lr: number;
  minLr: number; warmup: number; weightDecay: number; seed: number; threads?: number; out: string;
  /** A checkpoint file or run folder; true (bare --resume): the --out folder's checkpoint. */
  resume?: string | true;
  evalEvery: number; checkpointEvery: number; progress: boolean; json: boolean;
  tree?: string; memoryLevels: string; memoryMode: MemoryTrainMode; memoryLrScale: number; memoryWeightDecay: number;
  /** Layers that carry memories: "0,3,5-7" or "last:4" (default: all). */
  memoryLayers?: string;
  anchor?: string; bankFile: boolean; stopAfter?: number; config?: string; backend: Backend;
  /** A folder written by `hiermem prepare` (instead of --corpus). */
  data?: string;
  /** A Hugging Face tokenizer.json (default: the checkpoint's a run resumes or starts from, else bytes). */
  tokenizer?: string;
  /** 'mpi': data-parallel across the processes of an MPI job (absent: one process). */
  dist?: DistMode;
  /** Bank levels >= this tree level are sharded by subtree under --dist mpi (memory runs; default 1). */
  shardLevel?: number;
}

/**
 * The run's communicator: MPI with --dist mpi (first, so that a machine without MPI fails before
 * any work); otherwise none, with a warning when an MPI launcher started this process.
 */
function distOf(f: TrainFlags, backend: ResolvedBackend): Communicator | undefined {
  if (f.shardLevel !== undefined) {
    if (!Number.isInteger(f.shardLevel) || f.shardLevel < 1) throw new HiermemError('E_INVALID_ARGUMENT', `--shard-level must be an integer >= 1, got ${f.shardLevel}`);
    if (f.dist !== 'mpi') throw new HiermemError('E_INVALID_ARGUMENT', '--shard-level applies to memory runs under --dist mpi');
  }
  // the CUDA backend's anchor gradients are all-reduced on the device by NCCL (memory runs stay on MPI: the sharded bank trains on the CPU backend only)
  if (f.dist === 'mpi') return createCommunicator('mpi', { nccl: backend === 'cuda' && f.tree === undefined });
  const launched = launcherWorldSize();
  if (f.dist === undefined && launched !== null && launched > 1) {
    process.stderr.write(`hiermem: warning: an MPI launcher started ${launched} processes but --dist is not set: each trains alone (pass --dist mpi)\n`);
  }
  return undefined;
}

/**
 * --tokenizer FILE; else the tokenizer of the checkpoint the run resumes or takes its anchor from;
 * else the one --data was prepared with; else bytes. (A mismatch between them is refused later.)
 */
async function tokenizerFor(f: TrainFlags): Promise<Tokenizer> {
  if (f.tokenizer !== undefined) return loadHfTokenizer(f.tokenizer);
  const from = f.resume === true ? path.join(f.out, CHECKPOINT_FILE) : f.resume ?? f.anchor;
  if (from !== undefined) return (await isHfModelDir(from)) ? loadHfTokenizer(path.join(from, 'tokenizer.json')) : readCheckpointTokenizer(await resolveCheckpointPath(from));
  if (f.data !== undefined) {
    const d = await PreparedData.open(f.data);
    try {
      return tokenizerFromJSON(d.manifest.tokenizer.json);
    } finally {
      d.close();
    }
  }
  return new ByteTokenizer();
}

/** The model config: a preset, overridden field by field by a JSON file (--config). */
async function modelConfigOf(f: TrainFlags, vocabSize: number): Promise<Partial<ModelConfig> & { vocabSize: number }> {
  const preset = MODEL_PRESETS[f.preset];
  if (!preset) throw new HiermemError('E_INVALID_ARGUMENT', `unknown preset "${f.preset}" (have: ${Object.keys(MODEL_PRESETS).join(', ')})`);
  const extra: Partial<ModelConfig> = f.config ? await readModelConfigFile(f.config) : {};
  const cfg = { ...preset, seed: f.seed, ...extra, vocabSize } as Partial<ModelConfig> & { vocabSize: number };
  try {
    resolveModelConfig(cfg);
  } catch (e) {
    if (e instanceof HiermemError && f.config) throw new HiermemError(e.code, `${f.config}: ${e.message}`, { cause: e });
    throw e;
  }
  return cfg;
}

/** Reads the corpus and splits off validation documents. */
async function prepareCorpus(f: TrainFlags) {
  const format = f.format === 'text' && f.corpus?.endsWith('.jsonl') ? 'jsonl' : f.format;
  const docs = await loadDocs(f.corpus, format, f.field);
  return { docs, ...splitDocuments(docs, 0.05) };
}

/**
 * With --data no document is held: the first held-out (else training) document, decoded from the
 * prepared stream, only to prompt the summary's sample.
 */
function preparedPrompts(d: PreparedData, tokenizer: Tokenizer): { docs: string[]; train: string[]; val: string[] } {
  const first = (split: 'train' | 'val') => {
    const s = d.tokenStream(split);
    const ids = s.read(0, Math.min(s.length, 256));
    const end = ids.indexOf(tokenizer.eotId);
    return s.length > 0 ? [tokenizer.decode(end < 0 ? ids : ids.subarray(0, end))] : [];
  };
  const val = first('val'), train = first('train');
  return { docs: [...train, ...val], train, val };
}

/** The opening words of a document (at most 4, and 40 characters): the prompt of train's sample. */
function openingWords(doc: string | undefined): string {
  let out = '';
  for (const w of (doc ?? '').trim().split(/\s+/).slice(0, 4)) {
    const next = out ? `${out} ${w}` : w;
    if (out && next.length > 40) break;
    out = next;
  }
  return out.slice(0, 40);
}

export async function cmdTrain(f: TrainFlags): Promise<void> {
  if (f.threads) loadNative().setNumThreads(f.threads);
  // first, so that --backend cuda without a usable GPU fails before any work (E_BACKEND_UNAVAILABLE)
  const backend = resolveBackend(f.backend);
  const comm = distOf(f, backend);
  const ranks = comm?.size ?? 1;
  const lead = (comm?.rank ?? 0) === 0; // only rank 0 prints and writes; the others stay quiet
  const tokenizer = await tokenizerFor(f);
  if (f.data !== undefined && f.corpus !== undefined) throw new HiermemError('E_INVALID_ARGUMENT', 'give --corpus or --data, not both');
  // --data: tokens and packed sequences are read from disk; the run's tokenizer and tree must be the data's
  // --corpus of IN_MEMORY_CORPUS_BYTES or more: prepared into a temporary folder, then read like --data (lib/data/auto-prepare.ts)
  const temp = f.data === undefined && f.corpus !== undefined && ranks === 1 && f.resume === undefined && !f.anchor
    && (await corpusBytes(f.corpus)) >= IN_MEMORY_CORPUS_BYTES
    ? await prepareTemporary({ corpus: f.corpus, format: f.format === 'text' && f.corpus.endsWith('.jsonl') ? 'jsonl' : f.format as CorpusFormat, field: f.field,
      tokenizer, ...(f.tree !== undefined ? { tree: f.tree } : {}), seqLen: (await modelConfigOf(f, tokenizer.vocabSize)).seqLen ?? 0 })
    : null;
  const dataDir = f.data ?? temp?.dir;
  const prepared = dataDir !== undefined ? await PreparedData.open(dataDir, { tokenizer, ...(f.tree !== undefined ? { tree: f.tree } : {}) }) : null;
  const treeFile = f.tree ?? prepared?.treeFile ?? undefined;
  const { docs, train: trainDocs, val: valDocs } = prepared ? preparedPrompts(prepared, tokenizer) : await prepareCorpus(f);
  const ckPath = path.join(f.out, CHECKPOINT_FILE);
  // bare --resume: the checkpoint this run's --out folder holds
  const resume = f.resume === true ? ckPath : f.resume;
  const modelConfig = resume === undefined && !f.anchor ? await modelConfigOf(f, tokenizer.vocabSize) : undefined;
  const log = (s: string) => { if (!f.json && lead) process.stderr.write(s + '\n'); };

  const run = await prepareRun({
    tokenizer, batchSize: f.batchSize, seed: f.seed, weightDecay: f.weightDecay, backend, outDir: f.out,
    data: prepared ? { prepared } : { documents: { train: trainDocs, val: valDocs } },
    ...(resume !== undefined ? { resume } : { anchor: f.anchor ? { checkpoint: f.anchor } : { config: modelConfig! } }),
    ...(treeFile !== undefined ? {
      memory: {
        tree: treeFile, levels: f.memoryLevels.split(',').map((x) => Number(x.trim())),
        ...(f.memoryLayers !== undefined ? { layers: (n: number) => parseLayerList(f.memoryLayers!, n) } : {}),
        ...(f.bankFile ? { bankFile: path.join(f.out, 'bank.work.safetensors') } : {}),
      },
    } : {}),
    memoryTraining: { mode: f.memoryMode, memoryLrScale: f.memoryLrScale, memoryWeightDecay: f.memoryWeightDecay },
    ...(comm ? { communicator: comm } : {}),
    ...(f.shardLevel !== undefined ? { shardLevel: f.shardLevel } : {}),
  });
  if (lead) await mkdir(f.out, { recursive: true });
  const { model, start } = run;
  const memoryRun = run.memory !== undefined;
  const metricsPath = path.join(f.out, 'metrics.jsonl');
  if (!start && lead) await writeFile(metricsPath, '');
  const flopsPerToken = trainFlopsPerToken(model.config);
  log(`hiermem: ${(prepared?.manifest.documents ?? docs.length).toLocaleString('en-US')} documents from ${f.data ?? f.corpus ?? SAMPLE_CORPUS_PATH}`);
  const origin = run.resumed ? `resumed ${run.resumed}` : f.anchor ? `from ${f.anchor}` : f.config ?? f.preset;
  const mem = run.memory;
  const describe = mem
    ? `anchor ${model.paramCount.toLocaleString('en-US')} params (${origin}) + memories (${f.memoryMode}; tree k ${mem.tree.k}, p ${mem.tree.p}; fetched ${mem.sizes.fetchedParams.toLocaleString('en-US')}, bank ${mem.sizes.bankParams.toLocaleString('en-US')})`
    : `anchor ${anchorParamCount(model.config).toLocaleString('en-US')} params (${origin})`;
  log(`hiermem: ${describe}, ${backend === 'cuda' ? 'CUDA backend' : `${loadNative().getNumThreads()} threads`}, writing ${f.out}`);
  if (comm) log(`hiermem: data-parallel over ${ranks} MPI ranks: global batch ${ranks * f.batchSize} (${f.batchSize} per rank)`);
  const plan = mem?.shardPlan;
  if (plan) log(`hiermem: bank levels >= ${plan.shardLevel} sharded by subtree: rank r owns ${Array.from({ length: ranks }, (_, r) => plan.owners.filter((o) => o === r).length).join(' / ')} of ${plan.owners.length} subtrees (${plan.balance} ${Array.from({ length: ranks }, (_, r) => plan.counts.reduce((a, c, i) => a + (plan.owners[i] === r ? c : 0), 0)).join(' / ')})`);

  const bar = f.progress && lead
    ? new cliProgress.SingleBar({
        format: 'train {bar} {value}/{total} | loss {loss} | val {val} | {tps} tok/s | {gflops} GFLOP/s | ETA {eta_formatted}',
        noTTYOutput: true, notTTYSchedule: 5000, stream: process.stderr, hideCursor: true,
      }, cliProgress.Presets.shades_classic)
    : null;
  bar?.start(f.steps, start?.step ?? 0, { loss: '-', val: '-', tps: '-', gflops: '-' });
  let lastVal = '-';
  const lines: string[] = [];
  const controller = new AbortController();
  const onProgress = (e: ProgressEvent) => {
    if (f.stopAfter !== undefined && e.step >= f.stopAfter) controller.abort();
    if (e.valLoss !== undefined) lastVal = e.valLoss.toFixed(3);
    // every rank trains on its own tokens: the job's counts are ranks x this rank's
    lines.push(JSON.stringify({ step: e.step, loss: e.loss, lr: e.lr, gradNorm: e.gradNorm, valLoss: e.valLoss, tokensSeen: e.tokensSeen * ranks, tokensPerSec: e.tokensPerSec * ranks }));
    bar?.update(e.step, {
      loss: e.loss.toFixed(3), val: lastVal, tps: Math.round(e.tokensPerSec * ranks).toLocaleString('en-US'),
      gflops: ((e.tokensPerSec * ranks * flopsPerToken) / 1e9).toFixed(1),
    });
  };
  const onSigint = () => controller.abort();
  process.once('SIGINT', onSigint);
  let hist: TrainHistory;
  try {
    hist = await run.train(
      { steps: f.steps, batchSize: f.batchSize, lr: f.lr, minLr: f.minLr, warmupSteps: f.warmup, evalEvery: f.evalEvery,
        checkpointEvery: f.checkpointEvery, checkpointPath: ckPath, signal: controller.signal, onProgress });
  } catch (e) {
    // --stop-after: a planned stop (checkpoint written), not a failure
    if (!(e instanceof HiermemError && e.code === 'E_ABORTED' && f.stopAfter !== undefined)) throw e;
    const done = lines.map((l) => JSON.parse(l) as { step: number; loss: number });
    hist = { steps: done.map((d) => d.step), losses: done.map((d) => d.loss), valSteps: [], valLosses: [], skippedSteps: 0,
      tokensPerSec: 0, elapsedSec: 0 };
  } finally {
    process.off('SIGINT', onSigint);
    bar?.stop();
    run.dispose(); // the host model was synced by trainLoop (or by its last checkpoint)
    prepared?.close();
    temp?.dispose();
    if (lead) await appendFile(metricsPath, lines.join('\n') + (lines.length ? '\n' : ''));
  }
  if (!lead) return; // MPI is finalised when the process exits
  await writeFile(path.join(f.out, 'loss.svg'), lineChartSvg('hiermem training', 'step', 'loss (nats/token)', [
    { name: 'train', x: hist.steps, y: hist.losses },
    { name: 'validation', x: hist.valSteps, y: hist.valLosses },
  ]));
  // the sample continues the opening of a held-out document (the first training one if none)
  const prompt = openingWords(valDocs[0]) || openingWords(trainDocs[0]);
  const sample = prompt ? prompt + (await run.continuation(prompt, 80)) : '';
  const summary = {
    steps: f.steps,
    tokens: hist.steps.length ? (hist.steps[hist.steps.length - 1]! - (start?.step ?? 0)) * f.batchSize * ranks * model.config.seqLen : 0,
    seconds: hist.elapsedSec,
    finalLoss: hist.losses.length ? hist.losses[hist.losses.length - 1] : null,
    valLoss: hist.valLosses.length ? hist.valLosses[hist.valLosses.length - 1] : null,
    tokensPerSec: hist.tokensPerSec * ranks,
    gflopsPerSec: (hist.tokensPerSec * ranks * flopsPerToken) / 1e9,
    elapsedSec: hist.elapsedSec,
    skippedSteps: hist.skippedSteps,
    paramCount: model.paramCount,
    memory: memoryRun,
    threads: loadNative().getNumThreads(),
    backend,
    ...(comm ? { dist: { mode: 'mpi', ranks, batchPerRank: f.batchSize, globalBatch: ranks * f.batchSize, ...(plan ? { shardLevel: plan.shardLevel, owners: plan.owners } : {}) } } : {}),
    config: model.config,
    checkpoint: ckPath,
    ...(sample ? { sample } : {}),
  };
  await writeFile(path.join(f.out, 'summary.json'), JSON.stringify(summary, null, 2) + '\n');
  if (f.json) process.stdout.write(JSON.stringify(summary) + '\n');
  else {
    log(`hiermem: done: train loss ${summary.finalLoss?.toFixed(3)}, val loss ${summary.valLoss?.toFixed(3)}, ${Math.round(summary.tokensPerSec)} tok/s`);
    if (sample) log(`hiermem: sample (greedy): ${summary.sample!.replace(/\n/g, ' ')}`);
    log(`hiermem: wrote ${ckPath}, ${path.join(f.out, 'loss.svg')}, ${metricsPath}, summary.json`);
  }
}
