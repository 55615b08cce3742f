#!/usr/bin/env node
/**
 * The `hiermem` command. All policy lives in lib/; this file parses flags and prints.
 */
import { Command, CommanderError, Option } from 'commander';
import { mkdir, writeFile, appendFile } from 'node:fs/promises';
import path from 'node:path';
import cliProgress from 'cli-progress';
import { HiermemError } from '../errors.js';
import { loadNative, nativeAddonPath, nativeAddonSource } from '../native.js';
import { detectGpu, resolveBackend, type Backend, type ResolvedBackend } from '../backend.js';
import { AnchorModel } from '../model/anchor.js';
import { MODEL_PRESETS, anchorParamCount, trainFlopsPerToken, resolveModelConfig, type ModelConfig } from '../model/config.js';
import { generate } from '../model/generate.js';
import { ByteTokenizer } from '../data/tokenizer.js';
import { loadSampleCorpus, readJsonlDocuments, readTextDocuments, SAMPLE_CORPUS_PATH } from '../data/corpus.js';
import { encodeDocuments, splitDocuments } from '../data/stream.js';
import { WindowSampler } from '../data/windows.js';
import { AdamW } from '../train/adamw.js';
import { loadCheckpoint } from '../train/checkpoint.js';
import { trainLoop, anchorStepper, type ProgressEvent, type TrainHistory, type TrainOptions } from '../train/trainer.js';
import type { TrainerState } from '../train/checkpoint.js';
import { memoryStepper, loadHierarchicalCheckpoint, type MemoryTrainMode } from '../train/memory-trainer.js';
import { RetrievalTree } from '../retrieval/tree.js';
import { MemoryBank } from '../memory/bank.js';
import { HierarchicalModel } from '../memory/memory-model.js';
import { memorySizes, resolveMemorySpec } from '../memory/spec.js';
import { packByLeaf, PathBatchSampler } from '../data/packing.js';
import { readProbes, scoreProbes } from '../eval/probes.js';
import { lineChartSvg } from '../eval/svg.js';
import { readSafetensorsHeader } from '../io/safetensors.js';
import { readModelConfigFile } from '../io/model-config.js';
import { runDemo } from '../eval/demo.js';
import { reportHtml, resultsTable } from '../eval/report.js';

function int(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n)) throw new HiermemError('E_INVALID_ARGUMENT', `expected an integer, got "${v}"`);
  return n;
}
function num(v: string): number {
  const n = Number(v);
  if (!Number.isFinite(n)) throw new HiermemError('E_INVALID_ARGUMENT', `expected a number, got "${v}"`);
  return n;
}

async function loadDocs(corpus: string | undefined, format: string, field: string): Promise<string[]> {
  if (!corpus) return loadSampleCorpus();
  if (format === 'jsonl') return readJsonlDocuments(corpus, field);
  return readTextDocuments(corpus, { separator: format === 'lines' ? 'line' : 'blank-line' });
}

interface TrainFlags {
  corpus?: string; format: string; field: string; preset: string; steps: number; batchSize: number; lr: number;
  minLr: number; warmup: number; weightDecay: number; seed: number; threads?: number; out: string; resume?: string;
  evalEvery: number; checkpointEvery: number; progress: boolean; json: boolean;
  tree?: string; memoryLevels: string; memoryMode: MemoryTrainMode; memoryLrScale: number; memoryWeightDecay: number;
  anchor?: string; bankFile: boolean; stopAfter?: number; config?: string; backend: Backend;
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

/** A training run ready to go: anchor-only or with memories. */
interface PreparedRun {
  train: (o: Partial<TrainOptions> & { steps: number }) => Promise<TrainHistory>;
  /** Frees the device model of a CUDA run (no-op on the CPU). */
  dispose: () => void;
  model: AnchorModel;
  start?: TrainerState;
  describe: string;
}

/** Reads the corpus and splits off validation documents. */
async function prepareCorpus(f: TrainFlags) {
  const format = f.format === 'text' && f.corpus?.endsWith('.jsonl') ? 'jsonl' : f.format;
  const docs = await loadDocs(f.corpus, format, f.field);
  return { docs, ...splitDocuments(docs, 0.05) };
}

async function cmdTrain(f: TrainFlags): Promise<void> {
  if (f.threads) loadNative().setNumThreads(f.threads);
  // first, so that --backend cuda without a usable GPU fails before any work (E_BACKEND_UNAVAILABLE)
  const backend = resolveBackend(f.backend);
  const tokenizer = new ByteTokenizer();
  const { docs, train: trainDocs, val: valDocs } = await prepareCorpus(f);
  const modelConfig = await modelConfigOf(f, tokenizer.vocabSize);
  await mkdir(f.out, { recursive: true });
  const ckPath = path.join(f.out, 'checkpoint.safetensors');
  const log = (s: string) => { if (!f.json) process.stderr.write(s + '\n'); };

  // A memory run: given a tree, or resuming a checkpoint that has a bank beside it.
  const resumeHeader = f.resume ? await readSafetensorsHeader(f.resume) : null;
  const memoryRun = f.tree !== undefined || resumeHeader?.metadata.memory_bank !== undefined;
  let run: PreparedRun;
  if (memoryRun) run = await prepareMemoryRun(f, tokenizer, trainDocs, valDocs, resumeHeader !== null, modelConfig, backend);
  else {
    let model: AnchorModel, optimizer: AdamW, start: TrainerState | undefined;
    if (f.resume) {
      const ck = await loadCheckpoint(f.resume, { maxBatch: f.batchSize });
      model = ck.model;
      optimizer = ck.optimizer ?? new AdamW(model, { weightDecay: f.weightDecay });
      start = ck.trainer;
    } else {
      model = AnchorModel.create(modelConfig, { maxBatch: f.batchSize });
      optimizer = new AdamW(model, { weightDecay: f.weightDecay });
    }
    const T = model.config.seqLen;
    const trainStream = encodeDocuments(trainDocs, tokenizer);
    const valStream = encodeDocuments(valDocs, tokenizer);
    const source = new WindowSampler(trainStream, T, start?.rngState ? Uint32Array.from(start.rngState) : f.seed);
    const val = new WindowSampler(valStream.length > T + 1 ? valStream : trainStream, T, f.seed + 1);
    const stepper = anchorStepper(model, optimizer, tokenizer, { backend });
    run = {
      train: (o) => trainLoop(stepper, source, val, start, o, T), dispose: () => stepper.dispose?.(), model, start,
      describe: `anchor ${anchorParamCount(model.config).toLocaleString('en-US')} params (${f.resume ? 'resumed' : f.config ?? f.preset})`,
    };
  }
  const { model, start } = run;
  const metricsPath = path.join(f.out, 'metrics.jsonl');
  if (!start) await writeFile(metricsPath, '');
  const flopsPerToken = trainFlopsPerToken(model.config);
  log(`hiermem: ${docs.length} documents from ${f.corpus ?? SAMPLE_CORPUS_PATH}`);
  log(`hiermem: ${run.describe}, ${backend === 'cuda' ? 'CUDA backend' : `${loadNative().getNumThreads()} threads`}, writing ${f.out}`);

  const bar = f.progress
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
    lines.push(JSON.stringify({ step: e.step, loss: e.loss, lr: e.lr, gradNorm: e.gradNorm, valLoss: e.valLoss, tokensSeen: e.tokensSeen, tokensPerSec: e.tokensPerSec }));
    bar?.update(e.step, {
      loss: e.loss.toFixed(3), val: lastVal, tps: Math.round(e.tokensPerSec).toLocaleString('en-US'),
      gflops: ((e.tokensPerSec * flopsPerToken) / 1e9).toFixed(1),
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
    await appendFile(metricsPath, lines.join('\n') + (lines.length ? '\n' : ''));
  }
  await writeFile(path.join(f.out, 'loss.svg'), lineChartSvg('hiermem training', 'step', 'loss (nats/token)', [
    { name: 'train', x: hist.steps, y: hist.losses },
    { name: 'validation', x: hist.valSteps, y: hist.valLosses },
  ]));
  const sample = memoryRun ? '' : tokenizer.decode(generate(model, tokenizer.encode('Hydrogen: '), { maxTokens: 80, temperature: 0, stopToken: tokenizer.eotId }));
  const summary = {
    steps: f.steps,
    tokens: hist.steps.length ? (hist.steps[hist.steps.length - 1]! - (start?.step ?? 0)) * f.batchSize * model.config.seqLen : 0,
    seconds: hist.elapsedSec,
    finalLoss: hist.losses.length ? hist.losses[hist.losses.length - 1] : null,
    valLoss: hist.valLosses.length ? hist.valLosses[hist.valLosses.length - 1] : null,
    tokensPerSec: hist.tokensPerSec,
    gflopsPerSec: (hist.tokensPerSec * flopsPerToken) / 1e9,
    elapsedSec: hist.elapsedSec,
    skippedSteps: hist.skippedSteps,
    paramCount: model.paramCount,
    memory: memoryRun,
    threads: loadNative().getNumThreads(),
    backend,
    config: model.config,
    checkpoint: ckPath,
    ...(sample ? { sample: 'Hydrogen: ' + sample } : {}),
  };
  await writeFile(path.join(f.out, 'summary.json'), JSON.stringify(summary, null, 2) + '\n');
  if (f.json) process.stdout.write(JSON.stringify(summary) + '\n');
  else {
    log(`hiermem: done: train loss ${summary.finalLoss?.toFixed(3)}, val loss ${summary.valLoss?.toFixed(3)}, ${Math.round(hist.tokensPerSec)} tok/s`);
    if (sample) log(`hiermem: sample (greedy): ${summary.sample!.replace(/\n/g, ' ')}`);
    log(`hiermem: wrote ${ckPath}, ${path.join(f.out, 'loss.svg')}, ${metricsPath}, summary.json`);
  }
}

/**
 * Memory training from the CLI: documents routed by the tree, packed per leaf; the anchor is new,
 * taken from --anchor CKPT, or resumed together with its bank.
 */
async function prepareMemoryRun(f: TrainFlags, tokenizer: ByteTokenizer, trainDocs: string[], valDocs: string[],
                                resuming: boolean, modelConfig: Partial<ModelConfig> & { vocabSize: number },
                                backend: ResolvedBackend): Promise<PreparedRun> {
  let hm: HierarchicalModel, optimizer: AdamW, start: TrainerState | undefined, treeFile: string;
  if (resuming) {
    const ck = await loadHierarchicalCheckpoint(f.resume!, { maxBatch: f.batchSize, inRam: true });
    hm = ck.hm;
    optimizer = ck.optimizer ?? new AdamW(hm.anchor, { weightDecay: f.weightDecay });
    start = ck.trainer;
    treeFile = path.join(path.dirname(f.resume!), 'tree.safetensors');
  } else {
    treeFile = f.tree!;
    const anchor = f.anchor ? (await loadCheckpoint(f.anchor, { maxBatch: f.batchSize, withOptimizer: false })).model
      : AnchorModel.create(modelConfig, { maxBatch: f.batchSize });
    const levels = f.memoryLevels.split(',').map((x) => Number(x.trim()));
    const tree = await RetrievalTree.load(treeFile);
    if (levels.length !== tree.p) {
      throw new HiermemError('E_CONFIG_INCOMPATIBLE', `--memory-levels lists ${levels.length} levels, the tree ${treeFile} has ${tree.p}`);
    }
    const spec = resolveMemorySpec({ k: tree.k, levels, generic: true }, anchor.config);
    const bank = f.bankFile
      ? await MemoryBank.createFile(path.join(f.out, 'bank.work.safetensors'), spec, anchor.config.dModel, { seed: f.seed })
      : MemoryBank.createInMemory(spec, anchor.config.dModel, { seed: f.seed });
    hm = HierarchicalModel.fromAnchor(anchor, bank, f.batchSize);
    optimizer = new AdamW(hm.anchor, { weightDecay: f.weightDecay });
  }
  const tree = await RetrievalTree.load(treeFile);
  if (!resuming) await tree.save(path.join(f.out, 'tree.safetensors'));
  const pack = async (texts: string[]) => {
    const paths = await tree.assignTexts(texts);
    return packByLeaf({ docs: texts.map((t) => tokenizer.encode(t)), paths, levels: tree.p },
      { seqLen: hm.anchor.config.seqLen, eotId: tokenizer.eotId, padId: tokenizer.padId! });
  };
  const source = new PathBatchSampler(await pack(trainDocs), { seed: f.seed, state: start?.rngState, genericK: tree.k });
  const val = new PathBatchSampler(await pack(valDocs), { seed: f.seed + 1 });
  const sizes = memorySizes(hm.bank.spec, hm.anchor.config, hm.anchor.paramCount);
  const stepper = memoryStepper(hm, optimizer, tokenizer,
    { mode: f.memoryMode, memoryLrScale: f.memoryLrScale, memoryWeightDecay: f.memoryWeightDecay, backend });
  return {
    train: (o) => trainLoop(stepper, source, val, start, o, hm.anchor.config.seqLen), dispose: () => stepper.dispose?.(),
    start, model: hm.anchor,
    describe: `anchor ${hm.anchor.paramCount.toLocaleString('en-US')} params + memories (${f.memoryMode}; tree k ${tree.k}, p ${tree.p}; fetched ${sizes.fetchedParams.toLocaleString('en-US')}, bank ${sizes.bankParams.toLocaleString('en-US')})`,
  };
}

async function cmdGenerate(promptArg: string | undefined, f: { ckpt?: string; checkpoint?: string; prompt?: string; maxTokens: number; temperature: number; topK: number; seed: number }) {
  const file = f.ckpt ?? f.checkpoint;
  const prompt = promptArg ?? f.prompt;
  if (!file) throw new HiermemError('E_INVALID_ARGUMENT', 'generate needs --ckpt <checkpoint.safetensors>');
  if (prompt === undefined) throw new HiermemError('E_INVALID_ARGUMENT', 'generate needs a prompt (argument or --prompt)');
  const opts = { maxTokens: f.maxTokens, temperature: f.temperature, topK: f.topK, seed: f.seed };
  const header = await readSafetensorsHeader(file);
  if (header.metadata.memory_bank !== undefined) {
    // a memory checkpoint: route the prompt through the tree saved beside it, fetch that path once
    const ck = await loadHierarchicalCheckpoint(file, { maxBatch: 1 });
    const tree = await RetrievalTree.load(path.join(path.dirname(file), 'tree.safetensors'));
    const route = await tree.assignText(prompt);
    const out = generate(ck.hm.logitsForPath(route), ck.tokenizer.encode(prompt), { ...opts, stopToken: ck.tokenizer.eotId });
    process.stderr.write(`hiermem: memory path ${Array.from(route).join(' > ')} (k ${tree.k}, ${tree.p} levels)\n`);
    process.stdout.write(prompt + ck.tokenizer.decode(out) + '\n');
    return;
  }
  const ck = await loadCheckpoint(file, { maxBatch: 1, withOptimizer: false });
  const out = generate(ck.model, ck.tokenizer.encode(prompt), { ...opts, stopToken: ck.tokenizer.eotId });
  process.stdout.write(prompt + ck.tokenizer.decode(out) + '\n');
}

/** CUDA's version numbers (13000) as "13.0"; null for 0 (no driver / no runtime). */
function cudaVersion(v: number): string | null {
  return v > 0 ? `${Math.floor(v / 1000)}.${Math.floor((v % 1000) / 10)}` : null;
}

/** `info --gpu`: the child probe's findings (never throws for a missing GPU, driver or library). */
function gpuInfo() {
  const g = detectGpu();
  const d = g.device;
  const gib = (b: number) => `${(b / 1073741824).toFixed(1)} GiB`;
  return {
    available: g.available,
    reason: g.reason,
    driverPresent: g.driverPresent,
    driver: d ? cudaVersion(d.driverVersion) : null,
    runtime: d ? cudaVersion(d.runtimeVersion) : null,
    device: d && d.status === 0 ? d.name : null,
    deviceCount: d ? d.deviceCount : 0,
    computeCapability: d && d.status === 0 ? d.computeCapability : null,
    memory: d && d.status === 0 ? { free: gib(d.freeBytes), total: gib(d.totalBytes), freeBytes: d.freeBytes, totalBytes: d.totalBytes } : null,
    status: d ? { code: d.status, text: d.statusText } : null,
    library: g.library,
  };
}

/** Without a file: what the addon found (--gpu: and what CUDA finds). With a file: a checkpoint, bank or tree's header (shapes, sizes, spec). */
async function cmdInfo(file: string | undefined, opts: { gpu?: boolean } = {}) {
  if (!file) {
    const n = loadNative();
    const info: Record<string, unknown> = { version: n.version, blas: n.blas, threads: n.getNumThreads(), platform: `${process.platform}-${process.arch}`, node: process.versions.node, napi: process.versions.napi,
      addonPath: nativeAddonPath(), addonSource: nativeAddonSource() };
    if (opts.gpu) info.gpu = gpuInfo();
    process.stdout.write(JSON.stringify(info, null, 2) + '\n');
    return;
  }
  if (opts.gpu) throw new HiermemError('E_INVALID_ARGUMENT', '--gpu takes no file: run "hiermem info --gpu"');
  const h = await readSafetensorsHeader(file);
  const tensors = [...h.tensors.entries()].map(([name, t]) => ({ name, dtype: t.dtype, shape: t.shape, bytes: t.end - t.begin }));
  const metadata: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(h.metadata)) {
    try {
      metadata[k] = JSON.parse(v);
    } catch {
      metadata[k] = v;
    }
  }
  const params = tensors.filter((t) => t.dtype === 'F32' && !/adam|optimizer/.test(t.name)).reduce((n, t) => n + t.bytes / 4, 0);
  process.stdout.write(JSON.stringify({ file, format: h.metadata.format ?? 'safetensors', parameters: params, dataBytes: tensors.reduce((n, t) => n + t.bytes, 0), metadata, tensors }, null, 2) + '\n');
}

async function cmdDemo(f: { quick: boolean; out: string; json: boolean; seed: number; threads?: number; progress: boolean }) {
  if (f.threads) loadNative().setNumThreads(f.threads);
  const log = (s: string) => { if (!f.json) process.stderr.write(s + '\n'); };
  let bar: cliProgress.SingleBar | null = null;
  const t0 = performance.now();
  const controller = new AbortController();
  const onSigint = () => controller.abort();
  process.once('SIGINT', onSigint);
  let r;
  try {
    r = await runDemo({
      seed: f.seed, quick: f.quick, signal: controller.signal,
      onPhase: (p) => {
        bar?.stop();
        bar = null;
        log(`hiermem demo: [${((performance.now() - t0) / 1000).toFixed(0)} s] ${p}`);
      },
      onProgress: (phase, e) => {
        if (!f.progress) return;
        if (!bar) {
          bar = new cliProgress.SingleBar({
            format: `${phase.padEnd(8)} {bar} {value}/{total} | loss {loss} | {tps} tok/s | ETA {eta_formatted}`,
            noTTYOutput: true, notTTYSchedule: 10000, stream: process.stderr, hideCursor: true,
          }, cliProgress.Presets.shades_classic);
          bar.start(e.totalSteps, 0, { loss: '-', tps: '-' });
        }
        bar.update(e.step, { loss: e.loss.toFixed(3), tps: Math.round(e.tokensPerSec).toLocaleString('en-US') });
      },
      onEvalProgress: (phase, done, total) => {
        if (!f.progress) return;
        if (!bar) {
          bar = new cliProgress.SingleBar({
            format: `${phase.padEnd(12)} {bar} {value}/{total} probes | ETA {eta_formatted}`,
            noTTYOutput: true, notTTYSchedule: 10000, stream: process.stderr, hideCursor: true,
          }, cliProgress.Presets.shades_classic);
          bar.start(total, 0);
        }
        bar.update(done);
      },
    });
  } finally {
    (bar as cliProgress.SingleBar | null)?.stop();
    process.off('SIGINT', onSigint);
  }
  await mkdir(f.out, { recursive: true });
  await writeFile(path.join(f.out, 'results.json'), JSON.stringify(r, null, 2) + '\n');
  await writeFile(path.join(f.out, 'report.html'), reportHtml(r));
  if (f.json) {
    process.stdout.write(JSON.stringify(r) + '\n');
  } else {
    process.stdout.write(`\n${resultsTable(r)}\n\nrouting accuracy ${(100 * r.routing.accuracy).toFixed(1)}%, ${r.seconds.toFixed(0)} s; wrote ${path.join(f.out, 'results.json')} and ${path.join(f.out, 'report.html')}\n`);
  }
}

async function cmdCluster(f: { corpus: string; format: string; field: string; k: number; levels: number; seed: number; out: string; json: boolean }) {
  const format = f.format === 'text' && f.corpus.endsWith('.jsonl') ? 'jsonl' : f.format;
  const docs = await loadDocs(f.corpus, format, f.field);
  const t0 = performance.now();
  const { tree, paths } = await RetrievalTree.fitTexts(docs, { k: f.k, p: f.levels, seed: f.seed });
  await tree.save(f.out);
  const leaves = new Set<number>();
  for (let i = 0; i < docs.length; i++) leaves.add(paths[i * f.levels + f.levels - 1]!);
  const summary = { documents: docs.length, k: f.k, levels: f.levels, leavesUsed: leaves.size, leaves: tree.leafCount, seconds: (performance.now() - t0) / 1000, out: f.out };
  if (f.json) process.stdout.write(JSON.stringify(summary) + '\n');
  else process.stderr.write(`hiermem: clustered ${docs.length} documents into ${leaves.size} of ${tree.leafCount} leaves (k ${f.k}, ${f.levels} levels); wrote ${f.out}\n`);
}

async function cmdEval(f: { ckpt: string; probes: string; json: boolean; progress: boolean }) {
  const probes = await readProbes(f.probes);
  const bar = f.progress ? new cliProgress.SingleBar({ format: 'eval  {bar} {value}/{total} probes | ETA {eta_formatted}', noTTYOutput: true,
    notTTYSchedule: 10000, stream: process.stderr }, cliProgress.Presets.shades_classic) : null;
  bar?.start(probes.length, 0);
  const tick = (n: number) => bar?.update(n);
  const header = await readSafetensorsHeader(f.ckpt);
  let result;
  if (header.metadata.memory_bank !== undefined) {
    const ck = await loadHierarchicalCheckpoint(f.ckpt, { maxBatch: 1 });
    const tree = await RetrievalTree.load(path.join(path.dirname(f.ckpt), 'tree.safetensors'));
    const paths = await tree.assignTexts(probes.map((p) => p.prompt));
    result = scoreProbes(probes, ck.tokenizer, (_, i) => ck.hm.logitsForPath(paths.subarray(i * tree.p, (i + 1) * tree.p)), 12, tick);
  } else {
    const ck = await loadCheckpoint(f.ckpt, { maxBatch: 1, withOptimizer: false });
    result = scoreProbes(probes, ck.tokenizer, () => (ctx) => ck.model.nextTokenLogits(ctx), 12, tick);
  }
  bar?.stop();
  if (f.json) process.stdout.write(JSON.stringify(result) + '\n');
  else {
    process.stdout.write(`accuracy ${(100 * result.overall).toFixed(1)}% over ${result.n} probes\n`);
    for (const b of result.buckets) process.stdout.write(`  ${b.name}: ${(100 * b.accuracy).toFixed(1)}% (${b.n})\n`);
  }
}

const program = new Command();
// Usage errors from the argument parser get the same typed form as every other failure (set before
// the subcommands are added, so they inherit it).
program.exitOverride();
program.configureOutput({ writeErr: (s) => { if (!/^error:/.test(s)) process.stderr.write(s); } });
program.name('hiermem').description('Pretrain small language models with hierarchical parametric memories').version('0.1.0');

program.command('demo')
  .description('the long-tail knowledge experiment: anchor vs generic vs fetched memories vs a 2x dense model, per frequency bucket')
  .option('--quick', 'a smaller corpus and budget (about 1 minute)', false)
  .option('--out <dir>', 'output folder for results.json and report.html', 'runs/demo')
  .option('--seed <n>', 'seed of corpus, init and data order', int, 1)
  .option('--threads <n>', 'CPU threads (default: all cores)', int)
  .option('--no-progress', 'no progress bars')
  .option('--json', 'print the results as one JSON object on stdout', false)
  .action(cmdDemo);

program.command('train')
  .description('train the anchor model on a corpus (default: the embedded sample corpus)')
  .option('--corpus <file>', 'text or JSONL corpus (default: embedded data/sample/elements.txt)')
  .addOption(new Option('--format <format>', 'corpus format').choices(['text', 'lines', 'jsonl']).default('text'))
  .option('--field <name>', 'JSONL field holding the text', 'text')
  .addOption(new Option('--preset <name>', 'model size').choices(Object.keys(MODEL_PRESETS)).default('small'))
  .option('--config <file>', 'model config JSON overriding the preset (dModel, nLayers, nHeads, headDim, ffnHidden, seqLen, ...)')
  .option('--steps <n>', 'training steps', int, 300)
  .option('--batch-size <n>', 'sequences per step', int, 8)
  .option('--lr <x>', 'peak learning rate', num, 3e-3)
  .option('--min-lr <x>', 'final learning rate (cosine)', num, 3e-4)
  .option('--warmup <n>', 'warmup steps', int, 20)
  .option('--weight-decay <x>', 'AdamW weight decay', num, 0.1)
  .option('--seed <n>', 'seed (init and data order)', int, 1)
  .option('--threads <n>', 'CPU threads (default: all cores)', int)
  .option('--out <dir>', 'output folder', 'runs/anchor')
  .option('--resume <checkpoint>', 'continue from a checkpoint written by train')
  .option('--eval-every <n>', 'validation every n steps', int, 50)
  .option('--checkpoint-every <n>', 'checkpoint every n steps (0: only at the end)', int, 0)
  .option('--no-progress', 'no progress bar')
  .option('--json', 'print the summary as one JSON line on stdout', false)
  .option('--tree <file>', 'a retrieval tree from `hiermem cluster`: train with hierarchical memories')
  .option('--memory-levels <r1,r2,...>', 'hidden units per memory layer from each level\'s block (one per tree level)', '16,48')
  .addOption(new Option('--memory-mode <mode>', 'cotrain (anchor + memories), posthoc (anchor frozen), joint').choices(['cotrain', 'posthoc', 'joint']).default('cotrain'))
  .option('--memory-lr-scale <x>', 'memory LR = anchor LR x this', num, 2)
  .option('--memory-weight-decay <x>', 'weight decay of memory blocks (paper: 1e-3)', num, 1e-3)
  .option('--anchor <checkpoint>', 'start the anchor from this checkpoint (post-hoc or continued training)')
  .option('--bank-file', 'keep the bank memory-mapped in the output folder instead of RAM', false)
  .option('--stop-after <n>', 'stop after step n with a checkpoint (the schedule still spans --steps); resume later with --resume', int)
  .addOption(new Option('--backend <backend>', 'cpu; cuda (experimental: fails with E_BACKEND_UNAVAILABLE without a usable GPU); auto (CUDA where a GPU answers, HIERMEM_BACKEND overrides)')
    .choices(['cpu', 'cuda', 'auto']).default('cpu'))
  .action((opts: TrainFlags) => cmdTrain(opts));

program.command('cluster')
  .description('fit the retrieval tree (hierarchical k-means over document embeddings)')
  .requiredOption('--corpus <file>', 'text or JSONL corpus')
  .addOption(new Option('--format <format>', 'corpus format').choices(['text', 'lines', 'jsonl']).default('text'))
  .option('--field <name>', 'JSONL field holding the text', 'text')
  .option('--k <n>', 'branching factor', int, 8)
  .option('--levels <p>', 'tree depth', int, 2)
  .option('--seed <n>', 'seed', int, 1)
  .requiredOption('--out <file>', 'output tree (.safetensors)')
  .option('--json', 'print a summary as JSON', false)
  .action(cmdCluster);

program.command('eval')
  .description('fact-probe accuracy of a checkpoint, overall and per bucket')
  .requiredOption('--ckpt <file>', 'checkpoint written by train (a memory checkpoint routes each prompt through its tree)')
  .requiredOption('--probes <file>', 'JSONL: {"prompt", "answer", "bucket"?} per line')
  .option('--json', 'print {"overall", "n", "buckets"} on stdout', false)
  .option('--no-progress', 'no progress bar')
  .action(cmdEval);

program.command('generate')
  .description('continue a prompt with a trained checkpoint')
  .argument('[prompt]', 'prompt text')
  .option('--ckpt <file>', 'checkpoint .safetensors written by train')
  .option('--checkpoint <file>', 'same as --ckpt')
  .option('--prompt <text>', 'prompt text (instead of the argument)')
  .option('--max-tokens <n>', 'tokens to generate', int, 80)
  .option('--temperature <x>', '0 = greedy', num, 0.8)
  .option('--top-k <n>', 'sample among the k most likely tokens (0 = all)', int, 40)
  .option('--seed <n>', 'sampling seed', int, 1)
  .action(cmdGenerate);

program.command('info')
  .description('print what the native addon found, or inspect a checkpoint / bank / tree file')
  .argument('[file]', 'a .safetensors file written by hiermem')
  .option('--gpu', 'also probe CUDA: driver, runtime, device, compute capability, memory, which library loaded or why none')
  .action(cmdInfo);

program.parseAsync(process.argv).catch((e: unknown) => {
  // a file-system failure outside lib/ (metrics, summary, report files): E_IO like the library's
  if (!(e instanceof HiermemError) && e instanceof Error && typeof (e as NodeJS.ErrnoException).syscall === 'string') {
    e = new HiermemError('E_IO', e.message, { cause: e });
  }
  if (e instanceof HiermemError) {
    process.stderr.write(`hiermem: error ${e.code}: ${e.message}\n`);
    process.exit(2);
  }
  if (e instanceof CommanderError) {
    if (e.exitCode === 0) process.exit(0); // --help, --version
    process.stderr.write(`hiermem: error E_INVALID_ARGUMENT: ${e.message.replace(/^error: /, '')}\n`);
    process.exit(2);
  }
  throw e;
});
