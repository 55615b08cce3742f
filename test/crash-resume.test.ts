/**
 * Crash safety: `hiermem train --checkpoint-every 1` runs in a child process that is killed with
 * SIGKILL at chosen points — while a checkpoint's temp file is being written, after it is complete
 * but before its rename, between the bank's and the checkpoint's renames, before an older bank is
 * removed, as soon as a temp file appears, and at random times — then resumed with --resume.
 * After every kill: every file a loader accepts is complete (temp files are rejected), the last
 * checkpoint loads with its own bank, and the resumed run's losses equal an uninterrupted run's
 * bit for bit at the same steps. Anchor-only and memory (--tree) runs, RAM and file banks.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { watch, type FSWatcher } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile, access } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { readSafetensors, readSafetensorsHeader } from '../lib/io/safetensors.js';
import { loadCheckpoint } from '../lib/train/checkpoint.js';
import { loadHierarchicalCheckpoint } from '../lib/train/memory-trainer.js';
import { MemoryBank } from '../lib/memory/bank.js';
import { HiermemError } from '../lib/errors.js';
import { mulberry32 } from './helpers.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const CHILD = path.join(HERE, 'crash-child.js');
const CLI = path.resolve(HERE, '../lib/cli/main.js');
const STEPS = 30;
const TEMP_RE = /\.tmp-\d+-[0-9a-f]{12}$/;
const ENTITIES = ['Osmium', 'Iridium', 'Rhenium', 'Hafnium', 'Tantalum', 'Tungsten', 'Platinum', 'Gold'];

let dir = '';
let corpus = '';
let tree = '';
let runCount = 0;

type Mode = 'anchor' | 'memory' | 'bank-file';

function trainArgs(mode: Mode, out: string): string[] {
  const args = ['train', '--corpus', corpus, '--preset', 'tiny', '--batch-size', '4', '--steps', String(STEPS), '--checkpoint-every', '1',
    '--eval-every', '0', '--threads', '1', '--warmup', '5', '--out', out, '--json', '--no-progress'];
  if (mode !== 'anchor') args.push('--tree', tree, '--memory-levels', '4,8');
  if (mode === 'bank-file') args.push('--bank-file');
  return args;
}

/**
 * How a child run is stopped: at a fault-injection pause; `afterMs` after the first temp file
 * appears in the output folder (training has begun); or when the n-th distinct temp file appears.
 */
type Kill = { pause: string } | { afterMs: number } | { nthTemp: number } | null;

interface ChildResult {
  killed: boolean;
  code: number | null;
  stderr: string;
  tempSeenAtKill: boolean;
  pid: number | undefined;
  /** ms from spawn to the first temp file, and to exit. */
  firstTempMs: number;
  totalMs: number;
}

function runChild(args: string[], kill: Kill, out: string): Promise<ChildResult> {
  runCount++;
  return new Promise((resolve, reject) => {
    const env = { ...process.env };
    delete env.HIERMEM_TEST_PAUSE;
    if (kill && 'pause' in kill) env.HIERMEM_TEST_PAUSE = kill.pause;
    const t0 = performance.now();
    let firstTempMs = NaN;
    const child = spawn(process.execPath, [CHILD, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    let killed = false;
    let tempSeenAtKill = false;
    const doKill = (temp = false) => {
      if (killed || child.exitCode !== null) return;
      killed = child.kill('SIGKILL');
      tempSeenAtKill = temp;
    };
    const limit = setTimeout(() => { stderr += '\n[test: child ran past 60 s]'; doKill(); }, 60_000);
    child.stdout.resume();
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      if (kill && 'pause' in kill && stderr.includes('HIERMEM-TEST PAUSED')) doKill();
    });
    // events come for creation, writes and the rename away; count distinct temp names
    const temps = new Set<string>();
    const watcher: FSWatcher = watch(out, (_event, name) => {
      if (!name || !TEMP_RE.test(String(name)) || temps.has(String(name))) return;
      temps.add(String(name));
      if (temps.size === 1) {
        firstTempMs = performance.now() - t0;
        if (kill && 'afterMs' in kill) setTimeout(doKill, kill.afterMs);
      }
      if (kill && 'nthTemp' in kill && temps.size === kill.nthTemp) doKill(true);
    });
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(limit);
      watcher.close();
      resolve({ killed, code, stderr, tempSeenAtKill, pid: child.pid, firstTempMs, totalMs: performance.now() - t0 });
    });
  });
}

async function exists(file: string): Promise<boolean> {
  return access(file).then(() => true, () => false);
}

async function metricsLosses(out: string): Promise<Map<number, number>> {
  const text = await readFile(path.join(out, 'metrics.jsonl'), 'utf8');
  const m = new Map<number, number>();
  for (const line of text.split('\n').filter(Boolean)) {
    const { step, loss } = JSON.parse(line) as { step: number; loss: number };
    assert.ok(!m.has(step), `step ${step} appears twice in metrics.jsonl`);
    m.set(step, loss);
  }
  return m;
}

const reference = new Map<Mode, Map<number, number>>();

/**
 * After a kill: every .safetensors file reads completely; a temp file is either rejected as
 * corrupt or, when the kill came after it was complete (its length is written last, just before
 * the rename), loads fully with its own loader — and the temp file the killed writer was writing
 * when a write pause stopped it is always rejected. Then the checkpoint (if any) loads with the
 * bank it names. Returns the checkpoint's step (0: none).
 */
async function checkAfterKill(mode: Mode, out: string, kill: Kill, killedPid: number | undefined, label: string): Promise<number> {
  const files = await readdir(out);
  const paused = kill && 'pause' in kill && kill.pause.startsWith('write:') ? new RegExp(kill.pause.split(':')[1]!) : null;
  for (const name of files) {
    const file = path.join(out, name);
    if (TEMP_RE.test(name)) {
      const incomplete = paused !== null && paused.test(name) && name.includes(`.tmp-${killedPid}-`);
      try {
        await readSafetensors(file);
      } catch (e) {
        assert.ok(e instanceof HiermemError && e.code === 'E_CHECKPOINT_CORRUPT', `${label}: ${name}: ${String(e)}`);
        continue;
      }
      assert.ok(!incomplete, `${label}: the incomplete temp file ${name} was accepted`);
      if (name.startsWith('checkpoint.safetensors.')) await loadCheckpoint(file);
      else if (name.includes('.bank.')) (await MemoryBank.openFile(file, { writable: false })).close();
    } else if (name.endsWith('.safetensors')) {
      await readSafetensors(file); // complete, or it throws and fails the test
    }
  }
  const ck = path.join(out, 'checkpoint.safetensors');
  if (!(await exists(ck))) return 0;
  if (mode === 'anchor') {
    const c = await loadCheckpoint(ck);
    assert.ok(c.optimizer && c.trainer, `${label}: checkpoint has optimizer and trainer state`);
    return c.trainer.step;
  }
  const c = await loadHierarchicalCheckpoint(ck, { inRam: true });
  try {
    const step = c.trainer!.step;
    const header = (await readSafetensorsHeader(ck)).metadata;
    assert.match(header.memory_bank ?? '', new RegExp(`^checkpoint\\.bank\\.step-${step}(-[0-9a-f]+)?\\.safetensors$`),
      `${label}: the checkpoint of step ${step} names its own bank`);
    return step;
  } finally {
    c.hm.bank.close();
  }
}

/**
 * Runs `kills` in sequence on one output folder (each run resuming from the last checkpoint),
 * then a last uninterrupted resume; checks every kill's leftovers and the final losses.
 */
async function scenario(mode: Mode, label: string, kills: Kill[]): Promise<{ resumedFrom: number[]; tempKills: number }> {
  const out = path.join(dir, `${mode}-${label}`);
  await mkdir(out, { recursive: true });
  const ck = path.join(out, 'checkpoint.safetensors');
  const ref = reference.get(mode)!;
  const resumedFrom: number[] = [];
  let tempKills = 0;
  let lastPid: number | undefined;
  for (const [i, kill] of [...kills, null].entries()) {
    const from = i > 0 ? await checkAfterKill(mode, out, kills[i - 1] ?? null, lastPid, `${label} #${i}`) : 0;
    resumedFrom.push(from);
    const r = await runChild([...trainArgs(mode, out), ...(from > 0 ? ['--resume', ck] : [])], kill, out);
    lastPid = r.pid;
    if (r.tempSeenAtKill) tempKills++;
    if (kill && 'pause' in kill) assert.ok(r.killed, `${label} #${i}: never reached the pause point ${kill.pause}\n${r.stderr}`);
    if (!r.killed) {
      assert.equal(r.code, 0, `${label} #${i}: ${r.stderr}`);
      // completed: its metrics cover the steps after the checkpoint it started from, bit for bit
      const got = await metricsLosses(out);
      const steps = [...got.keys()];
      if (from < STEPS || steps.length === 0) {
        assert.deepEqual(steps, Array.from({ length: STEPS - from }, (_, j) => from + j + 1), `${label} #${i}: steps`);
      } else {
        // the run before was killed after its last checkpoint and its metrics, just before exiting
        assert.deepEqual(steps, Array.from({ length: steps.length }, (_, j) => STEPS - steps.length + j + 1), `${label} #${i}: steps`);
      }
      for (const [step, loss] of got) assert.equal(loss, ref.get(step), `${label} #${i}: loss at step ${step} (resumed from ${from})`);
      const left = await readdir(out);
      assert.deepEqual(left.filter((n) => TEMP_RE.test(n)), [], `${label}: temp files of killed runs are cleaned up`);
      if (mode !== 'anchor') {
        const banks = left.filter((n) => n.startsWith('checkpoint.bank.'));
        assert.equal(banks.length, 1, `${label}: one bank: ${banks.join(', ')}`);
        assert.match(banks[0]!, new RegExp(`^checkpoint\\.bank\\.step-${STEPS}(-[0-9a-f]+)?\\.safetensors$`));
      }
      break;
    }
  }
  return { resumedFrom, tempKills };
}

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'hiermem-crash-'));
  corpus = path.join(dir, 'c.jsonl');
  const lines: string[] = [];
  ENTITIES.forEach((e, i) => {
    for (let j = 0; j < 3; j++) lines.push(JSON.stringify({ text: `${e} is element number ${70 + i}. The code of ${e} is ${e.slice(0, 2)}${j}.` }));
  });
  await writeFile(corpus, lines.join('\n') + '\n');
  tree = path.join(dir, 'tree.safetensors');
  await promisify(execFile)(process.execPath, [CLI, 'cluster', '--corpus', corpus, '--k', '2', '--levels', '2', '--out', tree, '--json']);
});

after(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

const timings = new Map<Mode, number>();

for (const mode of ['anchor', 'memory', 'bank-file'] as const) {
  test(`${mode}: SIGKILL at any point, then --resume, reproduces the uninterrupted losses bit for bit`, { timeout: 300_000 }, async (t) => {
    // the uninterrupted run (its own checkpoints every step, as in the killed runs)
    const refOut = path.join(dir, `${mode}-reference`);
    await mkdir(refOut);
    const r = await runChild(trainArgs(mode, refOut), null, refOut);
    assert.equal(r.code, 0, r.stderr);
    timings.set(mode, r.totalMs);
    const ref = await metricsLosses(refOut);
    assert.equal(ref.size, STEPS);
    if (mode === 'bank-file' && reference.has('memory')) {
      // a memory-mapped bank trains bit-identically to a RAM bank
      assert.deepEqual(ref, reference.get('memory'));
    }
    reference.set(mode, ref);
    // random kills fall anywhere in the training part of a run (from its first temp file to its exit)
    const window = r.totalMs - r.firstTempMs;
    assert.ok(window > 0, 'the reference run wrote temp files');
    const rand = mulberry32({ anchor: 1, memory: 2, 'bank-file': 3 }[mode]);
    const randomDelay = () => ({ afterMs: Math.round(window * rand()) });
    const results: Array<[string, { resumedFrom: number[]; tempKills: number }]> = [];
    const run = async (label: string, kills: Kill[]) => results.push([label, await scenario(mode, label, kills)]);

    // A complete temp checkpoint, killed before its rename: the previous checkpoint is the one that loads.
    // For memory runs the bank of the new step is already renamed into place: the old checkpoint must
    // still name (and load) its own bank — a kill here made the resumed run inexact before banks were
    // named by step.
    await run('before-rename', [{ pause: 'rename:^checkpoint\\.safetensors$:7' }]);
    // mid-write: the n-th write into a checkpoint temp file (25 writes a file: zero length, header,
    // 22 tensors, real length): #2 = the first file's header only, #137 = the 6th file's 12th write
    await run('mid-write', [{ pause: 'write:^checkpoint\\.safetensors\\.tmp-:2' }, { pause: 'write:^checkpoint\\.safetensors\\.tmp-:137' }]);
    if (mode !== 'anchor') {
      // the second bank temp file written up to its header (3 writes a file: zero length, header, and
      // the real length once native code has filled the data section)
      await run('bank-mid-write', [{ pause: 'write:^checkpoint\\.bank\\.step-\\d+\\.safetensors\\.tmp-:5' }]);
      // the new checkpoint is in place, the previous bank not yet removed
      await run('before-bank-cleanup', [{ pause: 'unlink:^checkpoint\\.bank\\.step-\\d+\\.safetensors$:5' }]);
    }
    // as soon as a temp file appears (no hooks: the race as it happens)
    await run('at-temp-file', [{ nthTemp: 9 }, { nthTemp: 16 }]);
    // random times, three kills in a row on one folder
    await run('random', [randomDelay(), randomDelay(), randomDelay()]);
    for (const [label, res] of results) {
      t.diagnostic(`${mode} ${label}: resumed from steps ${res.resumedFrom.join(' -> ')}${res.tempKills ? `, ${res.tempKills} kill(s) while a temp file existed` : ''}`);
    }
    // the resumes really restarted mid-run (not only from scratch)
    assert.ok(results.some(([, res]) => res.resumedFrom.some((s) => s > 0 && s < STEPS)), 'some run resumed from a mid-run checkpoint');
    const before = results.find(([l]) => l === 'before-rename')![1];
    assert.equal(before.resumedFrom[1], 6, 'killed before the 7th checkpoint rename: resumes from step 6');
  });
}

test('crash-resume child runs', (t) => {
  assert.ok(runCount > 0);
  t.diagnostic(`${runCount} child training runs; reference run times ${[...timings].map(([m, ms]) => `${m} ${ms.toFixed(0)} ms`).join(', ')}`);
});
