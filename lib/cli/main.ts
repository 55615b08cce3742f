#!/usr/bin/env node
/**
 * The `hiermem` command. All policy lives in lib/; this file parses flags and prints (train: ./train.ts).
 */
import { Argument, Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import cliProgress from 'cli-progress';
import { HiermemError } from '../errors.js';
import { loadNative, nativeAddonPath, nativeAddonSource } from '../native.js';
import { detectGpu } from '../backend.js';
import { MODEL_PRESETS } from '../model/config.js';
import { generate } from '../model/generate.js';
import { limitVocab } from '../train/limit-vocab.js';
import { loadCheckpoint } from '../train/checkpoint.js';
import { loadHierarchicalCheckpoint } from '../train/memory-trainer.js';
import { TREE_FILE, resolveCheckpointPath } from '../train/run.js';
import { RetrievalTree } from '../retrieval/tree.js';
import { readSafetensorsHeader } from '../io/safetensors.js';
import { runDemo } from '../eval/demo.js';
import { reportHtml, resultsTable } from '../eval/report.js';
import { isProseResults, runProseDemo } from '../eval/prose-demo.js';
import { proseReportHtml, proseResultsTable } from '../eval/prose-report.js';
import { cmdTrain, type TrainFlags } from './train.js';
import { registerPrepareCommand } from './prepare.js';
import { registerEvalCommand, checkGivenTokenizer } from './eval.js';
import { registerTokenizerCommand } from './tokenizer.js';
import { registerClusterCommand } from './cluster.js';
import { registerImportCommand } from './import.js';
import { registerExportCommand } from './export.js';
import { int, num } from './args.js';
import { describeShards, parseManifest, shardForPath } from '../train/shard-checkpoint.js';

async function cmdGenerate(promptArg: string | undefined, f: { ckpt?: string; checkpoint?: string; prompt?: string; tokenizer?: string; maxTokens: number; temperature: number; topK: number; seed: number }) {
  const given = f.ckpt ?? f.checkpoint;
  const prompt = promptArg ?? f.prompt;
  if (!given) throw new HiermemError('E_INVALID_ARGUMENT', 'generate needs --ckpt <checkpoint file or train --out folder>');
  const file = await resolveCheckpointPath(given);
  if (prompt === undefined) throw new HiermemError('E_INVALID_ARGUMENT', 'generate needs a prompt (argument or --prompt)');
  const opts = { maxTokens: f.maxTokens, temperature: f.temperature, topK: f.topK, seed: f.seed };
  const header = await readSafetensorsHeader(file);
  const shards = parseManifest(file, header.metadata); // a sharded checkpoint (MPI run): open the shard holding the prompt's path
  if (header.metadata.memory_bank !== undefined || shards) {
    // a memory checkpoint: route the prompt through the tree saved beside it, fetch that path once
    const tree = await RetrievalTree.load(path.join(path.dirname(file), TREE_FILE));
    const route = await tree.assignText(prompt);
    const ck = await loadHierarchicalCheckpoint(file, { maxBatch: 1, ...(shards ? { shardRanks: [shardForPath(shards, route)] } : {}) });
    await checkGivenTokenizer(ck.tokenizer, f.tokenizer, file);
    const out = generate(limitVocab(ck.hm.logitsForPath(route), ck.tokenizer.vocabSize), ck.tokenizer.encode(prompt), { ...opts, stopToken: ck.tokenizer.eotId });
    process.stderr.write(`hiermem: memory path ${Array.from(route).join(' > ')} (k ${tree.k}, ${tree.p} levels)\n`);
    process.stdout.write(prompt + ck.tokenizer.decode(out) + '\n');
    return;
  }
  const ck = await loadCheckpoint(file, { maxBatch: 1, withOptimizer: false });
  await checkGivenTokenizer(ck.tokenizer, f.tokenizer, file);
  const out = generate(limitVocab(ck.model, ck.tokenizer.vocabSize), ck.tokenizer.encode(prompt), { ...opts, stopToken: ck.tokenizer.eotId });
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
    const info: Record<string, unknown> = { version: n.version, blas: n.blas, gemm: n.gemmKernel, threads: n.getNumThreads(), platform: `${process.platform}-${process.arch}`, node: process.versions.node, napi: process.versions.napi,
      addonPath: nativeAddonPath(), addonSource: nativeAddonSource() };
    if (opts.gpu) info.gpu = gpuInfo();
    process.stdout.write(JSON.stringify(info, null, 2) + '\n');
    return;
  }
  if (opts.gpu) throw new HiermemError('E_INVALID_ARGUMENT', '--gpu takes no file: run "hiermem info --gpu"');
  file = await resolveCheckpointPath(file);
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
  const shards = await describeShards(file, h.metadata); // a sharded memory checkpoint: its manifest, checked
  process.stdout.write(JSON.stringify({ file, format: h.metadata.format ?? 'safetensors', parameters: params, dataBytes: tensors.reduce((n, t) => n + t.bytes, 0), metadata, ...(shards ? { shards } : {}), tensors }, null, 2) + '\n');
}

async function cmdDemo(experiment: 'facts' | 'prose', f: { quick: boolean; out?: string; json: boolean; seed: number; threads?: number; progress: boolean }) {
  if (f.threads) loadNative().setNumThreads(f.threads);
  const prose = experiment === 'prose';
  const out = f.out ?? (prose ? 'runs/demo-prose' : 'runs/demo');
  const log = (s: string) => { if (!f.json) process.stderr.write(s + '\n'); };
  let bar: cliProgress.SingleBar | null = null;
  const t0 = performance.now();
  const controller = new AbortController();
  const onSigint = () => controller.abort();
  process.once('SIGINT', onSigint);
  let r;
  try {
    r = await (prose ? runProseDemo : runDemo)({
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
            format: `${phase.padEnd(12)} {bar} {value}/{total} ${prose ? 'documents' : 'probes'} | ETA {eta_formatted}`,
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
  await mkdir(out, { recursive: true });
  await writeFile(path.join(out, 'results.json'), JSON.stringify(r, null, 2) + '\n');
  await writeFile(path.join(out, 'report.html'), isProseResults(r) ? proseReportHtml(r) : reportHtml(r));
  if (f.json) {
    process.stdout.write(JSON.stringify(r) + '\n');
  } else {
    const table = isProseResults(r) ? `held-out perplexity (lower is better):\n${proseResultsTable(r)}` : resultsTable(r);
    process.stdout.write(`\n${table}\n\nrouting accuracy ${(100 * r.routing.accuracy).toFixed(1)}%, ${r.seconds.toFixed(0)} s; wrote ${path.join(out, 'results.json')} and ${path.join(out, 'report.html')}\n`);
  }
}

const program = new Command();
// Usage errors from the argument parser get the same typed form as every other failure (set before
// the subcommands are added, so they inherit it).
program.exitOverride();
program.configureOutput({ writeErr: (s) => { if (!/^error:/.test(s)) process.stderr.write(s); } });
program.name('hiermem').description('Pretrain small language models with hierarchical parametric memories').version('0.1.0');

program.command('demo')
  .description('the experiments: anchor vs generic vs fetched memories vs a 2x dense model, per frequency bucket (facts: probe accuracy; prose: held-out perplexity)')
  .addArgument(new Argument('[experiment]', 'facts: probe accuracy on the facts corpus; prose: held-out perplexity on Brown corpus and WordNet text')
    .choices(['facts', 'prose']).default('facts'))
  .option('--quick', 'a smaller corpus and budget (about 1 minute; prose: 2)', false)
  .option('--out <dir>', 'output folder for results.json and report.html (default runs/demo; prose: runs/demo-prose)')
  .option('--seed <n>', 'seed of corpus, init and data order', int, 1)
  .option('--threads <n>', 'CPU threads (default: all cores)', int)
  .option('--no-progress', 'no progress bars')
  .option('--json', 'print the results as one JSON object on stdout', false)
  .action(cmdDemo);

program.command('train')
  .description('train the anchor model on a corpus (default: the embedded sample corpus)')
  .option('--corpus <file>', 'text or JSONL corpus (default: embedded data/sample/elements.txt)')
  .option('--tokenizer <file>', 'a Hugging Face tokenizer.json (e.g. from `hiermem tokenizer train`); default: bytes, or the --resume/--anchor checkpoint\'s')
  .option('--data <dir>', 'a folder written by `hiermem prepare` (read from disk; with a tree there, a memory run)')
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
  .option('--resume [checkpoint]', 'continue from a checkpoint written by train: its file or run folder (bare: the --out folder\'s)')
  .option('--eval-every <n>', 'validation every n steps', int, 50)
  .option('--checkpoint-every <n>', 'checkpoint every n steps (0: only at the end)', int, 0)
  .option('--no-progress', 'no progress bar')
  .option('--json', 'print the summary as one JSON line on stdout', false)
  .option('--tree <file>', 'a retrieval tree from `hiermem cluster`: train with hierarchical memories')
  .option('--memory-levels <r1,r2,...>', 'hidden units per memory layer from each level\'s block (one per tree level)', '16,48')
  .option('--memory-layers <list>', 'layers that carry memories: indices and ranges ("0,3,5-7") or "last:N" (default: all)')
  .addOption(new Option('--memory-mode <mode>', 'cotrain (anchor + memories), posthoc (anchor frozen), joint').choices(['cotrain', 'posthoc', 'joint']).default('cotrain'))
  .option('--memory-lr-scale <x>', 'memory LR = anchor LR x this', num, 2)
  .option('--memory-weight-decay <x>', 'weight decay of memory blocks (paper: 1e-3)', num, 1e-3)
  .option('--anchor <checkpoint>', 'start the anchor from this checkpoint, file or run folder, or a Hugging Face model folder (post-hoc or continued training)')
  .option('--bank-file', 'keep the bank memory-mapped in the output folder instead of RAM', false)
  .option('--stop-after <n>', 'stop after step n with a checkpoint (the schedule still spans --steps); resume later with --resume', int)
  .addOption(new Option('--backend <backend>', 'cpu; cuda (experimental: fails with E_BACKEND_UNAVAILABLE without a usable GPU); auto (CUDA where a GPU answers, HIERMEM_BACKEND overrides)')
    .choices(['cpu', 'cuda', 'auto']).default('cpu'))
  .addOption(new Option('--dist <mode>', 'mpi: data-parallel across the processes mpirun started (README "Scaling out"); none: one process').choices(['none', 'mpi']))
  .option('--shard-level <s>', 'with --dist mpi and memories: bank levels >= s sharded by subtree across the ranks (default 1)', int)
  .action((opts: TrainFlags) => cmdTrain(opts));

program.command('generate')
  .description('continue a prompt with a trained checkpoint')
  .argument('[prompt]', 'prompt text')
  .option('--ckpt <file>', 'checkpoint .safetensors written by train, or its --out folder')
  .option('--checkpoint <file>', 'same as --ckpt')
  .option('--prompt <text>', 'prompt text (instead of the argument)')
  .option('--tokenizer <file>', 'tokenizer.json you mean to use: checked against the checkpoint\'s (E_CONFIG_INCOMPATIBLE if another)')
  .option('--max-tokens <n>', 'tokens to generate', int, 80)
  .option('--temperature <x>', '0 = greedy', num, 0.8)
  .option('--top-k <n>', 'sample among the k most likely tokens (0 = all)', int, 40)
  .option('--seed <n>', 'sampling seed', int, 1)
  .action(cmdGenerate);

program.command('info')
  .description('print what the native addon found, or inspect a checkpoint / bank / tree file')
  .argument('[file]', 'a .safetensors file written by hiermem (a train --out folder: its checkpoint)')
  .option('--gpu', 'also probe CUDA: driver, runtime, device, compute capability, memory, which library loaded or why none')
  .action(cmdInfo);

registerPrepareCommand(program);
registerEvalCommand(program);
registerTokenizerCommand(program);
registerClusterCommand(program);
registerImportCommand(program);
registerExportCommand(program);

/**
 * An option that takes a value must not swallow the next flag: `--out --steps 5` would write to a
 * folder named "--steps" and `--ckpt --json` would try to open "--json". Such a value is a usage
 * error naming the option. (Options with an optional value, like --resume, never take a flag.)
 */
function rejectFlagsAsValues(cmd: Command): void {
  for (const opt of cmd.options) {
    if (!opt.required) continue;
    const parse = opt.parseArg;
    opt.argParser((value: string, previous: unknown) => {
      if (value.startsWith('--')) {
        throw new InvalidArgumentError(`It is a flag: give ${opt.long ?? opt.flags} a value before the next option.`);
      }
      return parse ? parse(value, previous) : value;
    });
  }
  for (const sub of cmd.commands) rejectFlagsAsValues(sub);
}
rejectFlagsAsValues(program);

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
