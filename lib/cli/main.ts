#!/usr/bin/env node
/**
 * The `hiermem` command. All policy lives in lib/; this file parses flags and prints.
 */
import { Command, Option } from 'commander';
import { mkdir, writeFile, appendFile } from 'node:fs/promises';
import path from 'node:path';
import cliProgress from 'cli-progress';
import { HiermemError } from '../errors.js';
import { loadNative } from '../native.js';
import { AnchorModel } from '../model/anchor.js';
import { MODEL_PRESETS, anchorParamCount, trainFlopsPerToken } from '../model/config.js';
import { generate } from '../model/generate.js';
import { ByteTokenizer } from '../data/tokenizer.js';
import { loadSampleCorpus, readJsonlDocuments, readTextDocuments, SAMPLE_CORPUS_PATH } from '../data/corpus.js';
import { encodeDocuments, splitDocuments } from '../data/stream.js';
import { WindowSampler } from '../data/windows.js';
import { AdamW } from '../train/adamw.js';
import { loadCheckpoint } from '../train/checkpoint.js';
import { train, type ProgressEvent } from '../train/trainer.js';
import { lineChartSvg } from '../eval/svg.js';
import { readSafetensorsHeader } from '../io/safetensors.js';
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
}

async function cmdTrain(f: TrainFlags): Promise<void> {
  if (f.threads) loadNative().setNumThreads(f.threads);
  const tokenizer = new ByteTokenizer();
  const docs = await loadDocs(f.corpus, f.format, f.field);
  const { train: trainDocs, val: valDocs } = splitDocuments(docs, 0.05);
  const preset = MODEL_PRESETS[f.preset];
  if (!preset) throw new HiermemError('E_INVALID_ARGUMENT', `unknown preset "${f.preset}" (have: ${Object.keys(MODEL_PRESETS).join(', ')})`);

  let model: AnchorModel, optimizer: AdamW, start;
  if (f.resume) {
    const ck = await loadCheckpoint(f.resume, { maxBatch: f.batchSize });
    model = ck.model;
    optimizer = ck.optimizer ?? new AdamW(model, { weightDecay: f.weightDecay });
    start = ck.trainer;
  } else {
    model = AnchorModel.create({ ...preset, vocabSize: tokenizer.vocabSize, seed: f.seed }, { maxBatch: f.batchSize });
    optimizer = new AdamW(model, { weightDecay: f.weightDecay });
  }
  const T = model.config.seqLen;
  const trainStream = encodeDocuments(trainDocs, tokenizer);
  const valStream = encodeDocuments(valDocs, tokenizer);
  const trainSampler = new WindowSampler(trainStream, T, start?.rngState ? Uint32Array.from(start.rngState) : f.seed);
  const valSampler = new WindowSampler(valStream.length > T + 1 ? valStream : trainStream, T, f.seed + 1);

  await mkdir(f.out, { recursive: true });
  const ckPath = path.join(f.out, 'checkpoint.safetensors');
  const metricsPath = path.join(f.out, 'metrics.jsonl');
  await writeFile(metricsPath, '');
  const flopsPerToken = trainFlopsPerToken(model.config);
  const log = (s: string) => { if (!f.json) process.stderr.write(s + '\n'); };
  log(`hiermem: ${docs.length} documents (${trainStream.length} train / ${valStream.length} val tokens) from ${f.corpus ?? SAMPLE_CORPUS_PATH}`);
  log(`hiermem: anchor ${anchorParamCount(model.config).toLocaleString('en-US')} params (${f.preset}), ${loadNative().getNumThreads()} threads, writing ${f.out}`);

  const bar = f.progress
    ? new cliProgress.SingleBar({
        format: 'train {bar} {value}/{total} | loss {loss} | val {val} | {tps} tok/s | {gflops} GFLOP/s | ETA {eta_formatted}',
        noTTYOutput: true, notTTYSchedule: 5000, stream: process.stderr, hideCursor: true,
      }, cliProgress.Presets.shades_classic)
    : null;
  bar?.start(f.steps, start?.step ?? 0, { loss: '-', val: '-', tps: '-', gflops: '-' });
  let lastVal = '-';
  const lines: string[] = [];
  const onProgress = (e: ProgressEvent) => {
    if (e.valLoss !== undefined) lastVal = e.valLoss.toFixed(3);
    lines.push(JSON.stringify({ step: e.step, loss: e.loss, lr: e.lr, gradNorm: e.gradNorm, valLoss: e.valLoss, tokensSeen: e.tokensSeen, tokensPerSec: e.tokensPerSec }));
    bar?.update(e.step, {
      loss: e.loss.toFixed(3), val: lastVal, tps: Math.round(e.tokensPerSec).toLocaleString('en-US'),
      gflops: ((e.tokensPerSec * flopsPerToken) / 1e9).toFixed(1),
    });
  };
  const controller = new AbortController();
  const onSigint = () => controller.abort();
  process.once('SIGINT', onSigint);
  let hist;
  try {
    hist = await train(
      { model, optimizer, tokenizer, train: trainSampler, val: valSampler, start },
      { steps: f.steps, batchSize: f.batchSize, lr: f.lr, minLr: f.minLr, warmupSteps: f.warmup, evalEvery: f.evalEvery,
        checkpointEvery: f.checkpointEvery, checkpointPath: ckPath, signal: controller.signal, onProgress },
    );
  } finally {
    process.off('SIGINT', onSigint);
    bar?.stop();
    await appendFile(metricsPath, lines.join('\n') + (lines.length ? '\n' : ''));
  }
  await writeFile(path.join(f.out, 'loss.svg'), lineChartSvg('hiermem anchor training', 'step', 'loss (nats/token)', [
    { name: 'train', x: hist.steps, y: hist.losses },
    { name: 'validation', x: hist.valSteps, y: hist.valLosses },
  ]));
  const sample = tokenizer.decode(generate(model, tokenizer.encode('Hydrogen: '), { maxTokens: 80, temperature: 0, stopToken: tokenizer.eotId }));
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
    threads: loadNative().getNumThreads(),
    config: model.config,
    checkpoint: ckPath,
    sample: 'Hydrogen: ' + sample,
  };
  await writeFile(path.join(f.out, 'summary.json'), JSON.stringify(summary, null, 2) + '\n');
  if (f.json) process.stdout.write(JSON.stringify(summary) + '\n');
  else {
    log(`hiermem: done: train loss ${summary.finalLoss?.toFixed(3)}, val loss ${summary.valLoss?.toFixed(3)}, ${Math.round(hist.tokensPerSec)} tok/s`);
    log(`hiermem: sample (greedy): ${summary.sample.replace(/\n/g, ' ')}`);
    log(`hiermem: wrote ${ckPath}, ${path.join(f.out, 'loss.svg')}, ${metricsPath}, summary.json`);
  }
}

async function cmdGenerate(promptArg: string | undefined, f: { ckpt?: string; checkpoint?: string; prompt?: string; maxTokens: number; temperature: number; topK: number; seed: number }) {
  const file = f.ckpt ?? f.checkpoint;
  const prompt = promptArg ?? f.prompt;
  if (!file) throw new HiermemError('E_INVALID_ARGUMENT', 'generate needs --ckpt <checkpoint.safetensors>');
  if (prompt === undefined) throw new HiermemError('E_INVALID_ARGUMENT', 'generate needs a prompt (argument or --prompt)');
  const ck = await loadCheckpoint(file, { maxBatch: 1, withOptimizer: false });
  const out = generate(ck.model, ck.tokenizer.encode(prompt), {
    maxTokens: f.maxTokens, temperature: f.temperature, topK: f.topK, seed: f.seed, stopToken: ck.tokenizer.eotId,
  });
  process.stdout.write(prompt + ck.tokenizer.decode(out) + '\n');
}

/** Without a file: what the addon found. With a file: a checkpoint, bank or tree's header (shapes, sizes, spec). */
async function cmdInfo(file: string | undefined) {
  if (!file) {
    const n = loadNative();
    const info = { version: n.version, blas: n.blas, threads: n.getNumThreads(), platform: `${process.platform}-${process.arch}`, node: process.versions.node, napi: process.versions.napi };
    process.stdout.write(JSON.stringify(info, null, 2) + '\n');
    return;
  }
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

const program = new Command();
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
  .action((opts: TrainFlags) => cmdTrain(opts));

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
  .action(cmdInfo);

program.parseAsync(process.argv).catch((e: unknown) => {
  if (e instanceof HiermemError) {
    process.stderr.write(`hiermem: error ${e.code}: ${e.message}\n`);
    process.exit(2);
  }
  throw e;
});
