import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { AnchorModel } from '../lib/model/anchor.js';
import { AdamW } from '../lib/train/adamw.js';
import { MemoryBank } from '../lib/memory/bank.js';
import { HierarchicalModel } from '../lib/memory/memory-model.js';
import { resolveMemorySpec } from '../lib/memory/spec.js';
import { ByteTokenizer } from '../lib/data/tokenizer.js';
import { packByLeaf, PathBatchSampler } from '../lib/data/packing.js';
import { trainLoop, type TrainHistory } from '../lib/train/trainer.js';
import { memoryStepper, loadHierarchicalCheckpoint } from '../lib/train/memory-trainer.js';
import { HiermemError } from '../lib/errors.js';

const tok = new ByteTokenizer();
const CFG = { vocabSize: tok.vocabSize, dModel: 24, nLayers: 2, nHeads: 2, headDim: 12, ffnHidden: 48, seqLen: 32, seed: 3 };
// 8 "entities", one leaf each in a k=2, p=3 tree; each document states its entity's secret number
const docs = Array.from({ length: 8 }, (_, e) => tok.encode(`Entity ${e} has the secret number ${(e * 37) % 100}.`));
const paths = Int32Array.from(docs.flatMap((_, e) => [e >> 2, e >> 1, e]));
const seqs = packByLeaf({ docs: [...docs, ...docs], paths: Int32Array.from([...paths, ...paths]), levels: 3 }, { seqLen: CFG.seqLen, eotId: tok.eotId, padId: tok.padId! });

async function run(dir: string, stopAt: number, mode: 'cotrain' | 'posthoc', resume?: string): Promise<{ hist: TrainHistory; hm: HierarchicalModel }> {
  let hm: HierarchicalModel, opt: AdamW, start;
  if (resume) {
    const ck = await loadHierarchicalCheckpoint(resume, { inRam: true, maxBatch: 4 });
    hm = ck.hm;
    opt = ck.optimizer!;
    start = ck.trainer;
  } else {
    const anchor = AnchorModel.create(CFG, { maxBatch: 4 });
    const spec = resolveMemorySpec({ k: 2, levels: [2, 0, 4], generic: true }, CFG);
    hm = HierarchicalModel.fromAnchor(anchor, MemoryBank.createInMemory(spec, CFG.dModel, { seed: 11 }));
    opt = new AdamW(hm.anchor);
  }
  const sampler = new PathBatchSampler(seqs, { seed: 5, state: start?.rngState, genericK: 2 });
  const controller = new AbortController();
  try {
    const hist = await trainLoop(memoryStepper(hm, opt, tok, { mode, memoryLrScale: 3 }), sampler, undefined, start, {
      steps: 10, batchSize: 4, lr: 3e-3, warmupSteps: 2, evalEvery: 0, checkpointEvery: 1,
      checkpointPath: path.join(dir, 'ck.safetensors'), signal: controller.signal,
      onProgress: (e) => { if (e.step >= stopAt) controller.abort(); },
    }, CFG.seqLen);
    return { hist, hm };
  } catch (e) {
    if (e instanceof HiermemError && e.code === 'E_ABORTED') return { hist: { steps: [], losses: [], valSteps: [], valLosses: [], skippedSteps: 0, tokensPerSec: 0, elapsedSec: 0 }, hm };
    throw e;
  }
}

test('memory training resumes from a checkpoint bit for bit (anchor, bank, optimizer state, data order)', async () => {
  const a = await mkdtemp(path.join(tmpdir(), 'hm-a-')), b = await mkdtemp(path.join(tmpdir(), 'hm-b-'));
  const full = await run(a, 10, 'cotrain');
  await run(b, 4, 'cotrain');
  const resumed = await run(b, 10, 'cotrain', path.join(b, 'ck.safetensors'));
  assert.deepEqual(resumed.hist.losses, full.hist.losses.slice(4));
  assert.deepEqual(resumed.hm.anchor.params, full.hm.anchor.params);
  for (const [l, n] of [[0, 0], [0, 1], [2, 5], [3, 0]] as const) {
    assert.deepEqual(resumed.hm.bank.readBlock(l, n), full.hm.bank.readBlock(l, n));
    assert.equal(resumed.hm.bank.blockSteps(l, n), full.hm.bank.blockSteps(l, n));
  }
  await rm(a, { recursive: true });
  await rm(b, { recursive: true });
});

test('post-hoc mode trains the memories and leaves the anchor bit-identical', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'hm-p-'));
  const anchor = AnchorModel.create(CFG, { maxBatch: 4 });
  const before = Float32Array.from(anchor.params);
  const { hist, hm } = await run(dir, 10, 'posthoc');
  assert.deepEqual(hm.anchor.params, before);
  assert.ok(hist.losses[hist.losses.length - 1]! < hist.losses[0]!, `loss should fall: ${hist.losses}`);
  let trained = 0;
  for (let leaf = 0; leaf < 8; leaf++) if (hm.bank.blockSteps(2, leaf) > 0) trained++;
  assert.ok(trained >= 6, `most leaves fetched and trained (${trained})`);
  await rm(dir, { recursive: true });
});
