/**
 * Saving onto a full or read-only disk: a small tmpfs (mounted here; skipped when mounting is not
 * allowed) makes checkpoint, bank and hierarchical-checkpoint saves fail with ENOSPC / EROFS. Every
 * failure is a HiermemError E_IO naming the problem, the previous checkpoint stays byte-identical
 * and loadable, no temp file is left, and saving works again once space is back.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtemp, readFile, readdir, rm, open, writeFile, unlink, rmdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { AnchorModel } from '../lib/model/anchor.js';
import { AdamW } from '../lib/train/adamw.js';
import { ByteTokenizer } from '../lib/data/tokenizer.js';
import { saveCheckpoint, loadCheckpoint } from '../lib/train/checkpoint.js';
import { MemoryBank } from '../lib/memory/bank.js';
import { HierarchicalModel } from '../lib/memory/memory-model.js';
import { resolveMemorySpec } from '../lib/memory/spec.js';
import { saveHierarchicalCheckpoint, loadHierarchicalCheckpoint } from '../lib/train/memory-trainer.js';
import { HiermemError } from '../lib/errors.js';

const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../lib/cli/main.js');
const tok = new ByteTokenizer();
// about 30 KB per checkpoint with optimizer state: a few fit in the 256 KiB tmpfs
const CFG = { vocabSize: tok.vocabSize, dModel: 8, nLayers: 1, nHeads: 1, headDim: 8, ffnHidden: 16, seqLen: 8, seed: 2 };

let mnt = '';
let mounted = false;
let why = '';

before(async () => {
  mnt = await mkdtemp(path.join(tmpdir(), 'hiermem-tmpfs-'));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=256k,mode=0777', 'tmpfs', mnt], { stdio: 'pipe' });
    mounted = true;
  } catch (e) {
    why = `cannot mount a tmpfs (needs root): ${String((e as { stderr?: Buffer }).stderr ?? e).trim().split('\n')[0]}`;
  }
});

after(async () => {
  if (mounted) execFileSync('umount', [mnt]);
  await rmdir(mnt).catch(() => undefined);
});

/** Fills the file system with a filler file until at most `leave` bytes are free. */
async function fill(dir: string, leave = 0): Promise<string> {
  const file = path.join(dir, 'filler');
  const fh = await open(file, 'w');
  const chunk = new Uint8Array(4096).fill(1);
  try {
    for (;;) {
      const st = execFileSync('df', ['--output=avail', '-B1', dir]).toString().trim().split('\n').pop()!;
      const avail = Number(st);
      if (avail <= leave) break;
      const n = Math.min(chunk.length, Math.max(avail - leave, 1));
      await fh.write(chunk, 0, n);
    }
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOSPC') throw e;
  } finally {
    await fh.close();
  }
  return file;
}

function isIo(e: unknown, pattern: RegExp): boolean {
  assert.ok(e instanceof HiermemError, `a HiermemError, got ${String(e)}`);
  assert.equal(e.code, 'E_IO', e.message);
  assert.match(e.message, pattern);
  return true;
}

const noTemp = async (dir: string) => assert.deepEqual((await readdir(dir)).filter((n) => n.includes('.tmp-')), [], 'no temp file is left');

test('a full disk while saving a checkpoint: E_IO (ENOSPC), the previous checkpoint intact', async (t) => {
  if (!mounted) return t.skip(why);
  const dir = await mkdtemp(path.join(mnt, 'a-'));
  const model = AnchorModel.create(CFG, { maxBatch: 1 });
  const opt = new AdamW(model);
  const file = path.join(dir, 'ck.safetensors');
  await saveCheckpoint(file, { model, tokenizer: tok, optimizer: opt, trainer: { step: 1, tokensSeen: 8 } });
  const before = await readFile(file);
  model.params.fill(0.5);
  for (const leave of [0, 4096, 12 * 1024]) {
    const filler = await fill(dir, leave);
    await assert.rejects(saveCheckpoint(file, { model, tokenizer: tok, optimizer: opt, trainer: { step: 2, tokensSeen: 16 } }),
      (e) => isIo(e, /ENOSPC|no space/i));
    assert.deepEqual(await readFile(file), before, `the previous checkpoint is unchanged (${leave} bytes left)`);
    await noTemp(dir);
    await unlink(filler);
  }
  assert.equal((await loadCheckpoint(file)).trainer!.step, 1);
  // with space back, the same save succeeds
  await saveCheckpoint(file, { model, tokenizer: tok, optimizer: opt, trainer: { step: 2, tokensSeen: 16 } });
  assert.equal((await loadCheckpoint(file)).trainer!.step, 2);
  await rm(dir, { recursive: true });
});

test('a full disk while saving a memory checkpoint (bank written by native code): E_IO, the previous checkpoint and its bank intact', async (t) => {
  if (!mounted) return t.skip(why);
  const dir = await mkdtemp(path.join(mnt, 'm-'));
  const anchor = AnchorModel.create(CFG, { maxBatch: 1 });
  const spec = resolveMemorySpec({ k: 2, levels: [4, 8], generic: true }, CFG);
  const hm = HierarchicalModel.fromAnchor(anchor, MemoryBank.createInMemory(spec, CFG.dModel, { seed: 3 }), 1);
  const opt = new AdamW(hm.anchor);
  const file = path.join(dir, 'ck.safetensors');
  await saveHierarchicalCheckpoint(file, hm, tok, opt, { step: 1, tokensSeen: 8 });
  const names = (await readdir(dir)).sort();
  assert.deepEqual(names, ['ck.bank.step-1.safetensors', 'ck.safetensors']);
  const bytes = await Promise.all(names.map((n) => readFile(path.join(dir, n))));
  hm.bank.writeBlock(1, 3, new Float32Array(hm.bank.blockFloats(1)).fill(0.25));
  // 0: not even the bank's temp file opens; 12 KiB: the bank header fits, native pwrite fails;
  // 40 KiB: the bank is written, the checkpoint is not
  for (const leave of [0, 12 * 1024, 40 * 1024]) {
    const filler = await fill(dir, leave);
    await assert.rejects(saveHierarchicalCheckpoint(file, hm, tok, opt, { step: 2, tokensSeen: 16 }), (e) => isIo(e, /ENOSPC|no space/i));
    await unlink(filler);
    await noTemp(dir);
    // an orphan bank of step 2 may be left (written before the checkpoint failed); the old pair is intact
    for (const [i, n] of names.entries()) assert.deepEqual(await readFile(path.join(dir, n)), bytes[i], `${n} unchanged (${leave} bytes left)`);
    const ck = await loadHierarchicalCheckpoint(file, { inRam: true });
    assert.equal(ck.trainer!.step, 1);
    assert.deepEqual(ck.hm.bank.readBlock(1, 3), MemoryBank.createInMemory(spec, CFG.dModel, { seed: 3 }).readBlock(1, 3), 'the old bank is loaded');
    ck.hm.bank.close();
  }
  await saveHierarchicalCheckpoint(file, hm, tok, opt, { step: 2, tokensSeen: 16 });
  assert.deepEqual((await readdir(dir)).sort(), ['ck.bank.step-2.safetensors', 'ck.safetensors'], 'the old bank and orphans are removed');
  const ck = await loadHierarchicalCheckpoint(file, { inRam: true });
  assert.equal(ck.hm.bank.readBlock(1, 3)[0], 0.25);
  ck.hm.bank.close();
  hm.bank.close();
  await rm(dir, { recursive: true });
});

test('a read-only file system while saving: E_IO (EROFS), the previous checkpoint intact', async (t) => {
  if (!mounted) return t.skip(why);
  const dir = await mkdtemp(path.join(mnt, 'r-'));
  const model = AnchorModel.create(CFG, { maxBatch: 1 });
  const file = path.join(dir, 'ck.safetensors');
  await saveCheckpoint(file, { model, tokenizer: tok });
  const before = await readFile(file);
  execFileSync('mount', ['-o', 'remount,ro', mnt]);
  try {
    await assert.rejects(saveCheckpoint(file, { model, tokenizer: tok }), (e) => isIo(e, /EROFS|read-only/i));
    const bank = MemoryBank.createInMemory(resolveMemorySpec({ k: 2, levels: [2] }, CFG), CFG.dModel, { seed: 1 });
    await assert.rejects(bank.save(path.join(dir, 'bank.safetensors')), (e) => isIo(e, /EROFS|read-only/i));
    bank.close();
    assert.deepEqual(await readFile(file), before);
    // the CLI reports it as a typed error with exit status 2, not a stack trace
    await assert.rejects(promisify(execFile)(process.execPath, [CLI, 'train', '--preset', 'tiny', '--steps', '1', '--batch-size', '1', '--out', dir, '--no-progress']),
      (e: { code?: number; stderr?: string }) => e.code === 2 && /hiermem: error E_IO/.test(e.stderr ?? ''));
  } finally {
    execFileSync('mount', ['-o', 'remount,rw', mnt]);
  }
  await noTemp(dir);
  await rm(dir, { recursive: true });
});

test('permission denied while saving: E_IO (EACCES), the previous checkpoint intact', async (t) => {
  if (process.getuid?.() === 0) return t.skip('root ignores file permissions (the read-only test covers this path)');
  const dir = await mkdtemp(path.join(tmpdir(), 'hiermem-perm-'));
  const model = AnchorModel.create(CFG, { maxBatch: 1 });
  const file = path.join(dir, 'ck.safetensors');
  await saveCheckpoint(file, { model, tokenizer: tok });
  const before = await readFile(file);
  const { chmod } = await import('node:fs/promises');
  await chmod(dir, 0o555);
  try {
    await assert.rejects(saveCheckpoint(file, { model, tokenizer: tok }), (e) => isIo(e, /EACCES|permission/i));
    assert.deepEqual(await readFile(file), before);
  } finally {
    await chmod(dir, 0o755);
  }
  await writeFile(path.join(dir, 'x'), '');
  await rm(dir, { recursive: true });
});
