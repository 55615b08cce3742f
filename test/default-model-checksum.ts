/**
 * One SHA-256 over everything a default-config model computes (the Llama-family fields all at their
 * defaults): the init parameters, the loss, gradients and memory gradients of a packed batch, the
 * next-token logits, and the KV-cached prefill and decode logits, on two shapes with and without
 * FFN-memories, plus the bytes of a checkpoint. Recorded before the Llama-family generalisation,
 * so a test can show that today's models still compute bit for bit what they did.
 */
import { createHash } from 'node:crypto';
import { readFile, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { AnchorModel } from '../lib/model/anchor.js';
import { saveCheckpoint } from '../lib/train/checkpoint.js';
import { ByteTokenizer } from '../lib/data/tokenizer.js';
import type { NativeMemoryBatch } from '../lib/native-types.js';

const SHAPES = [
  { vocabSize: 259, dModel: 32, nLayers: 2, nHeads: 2, headDim: 16, ffnHidden: 64, seqLen: 24, seed: 3 },
  { vocabSize: 23, dModel: 40, nLayers: 3, nHeads: 3, headDim: 14, ffnHidden: 52, seqLen: 70, seed: 4 },
];

export async function defaultModelChecksum(): Promise<string> {
  const h = createHash('sha256');
  const add = (a: Float32Array | Float64Array | Uint8Array): void => {
    h.update(Buffer.from(a.buffer, a.byteOffset, a.byteLength));
  };
  let s = 12345;
  const rnd = (): number => {
    s = (s * 1103515245 + 12345) >>> 0;
    return s / 4294967296;
  };
  const dir = await mkdtemp(path.join(os.tmpdir(), 'hm-default-sum-'));
  try {
    for (const [ci, cfg] of SHAPES.entries()) {
      for (const withMem of [false, true]) {
        const B = 3, T = cfg.seqLen, C = cfg.dModel, R = 5;
        const l2m = Int32Array.from({ length: cfg.nLayers }, (_, l) => (l === cfg.nLayers - 1 ? 0 : -1));
        const m = AnchorModel.create(cfg, { maxBatch: B, memory: withMem ? { R, layerToMemory: l2m } : null });
        add(m.params);
        const tokens = Int32Array.from({ length: B * T }, () => Math.floor(rnd() * cfg.vocabSize));
        const targets = Int32Array.from({ length: B * T }, () => Math.floor(rnd() * (cfg.vocabSize + 1)) - 1);
        const docStart = new Int32Array(B * T);
        for (let b = 0; b < B; b++) {
          let st = 0;
          for (let t = 0; t < T; t++) {
            if (t > 0 && rnd() < 0.08) st = t;
            docStart[b * T + t] = st;
          }
        }
        let memory: (NativeMemoryBatch & { fetched: Float32Array; dfetched: Float32Array }) | null = null;
        if (withMem) {
          const fetched = Float32Array.from({ length: 2 * 3 * R * C }, () => rnd() - 0.5);
          memory = { fetched, dfetched: new Float32Array(fetched.length), seqSlot: Int32Array.from([1, -1, 0]), numSlots: 2 };
        }
        const loss = m.forwardBackwardSync({ tokens, targets, docStart, batchSize: B, memory });
        add(Float64Array.from([loss]));
        add(m.grads);
        if (memory) add(memory.dfetched);
        const mem1 = memory ? { fetched: memory.fetched.subarray(0, 3 * R * C), dfetched: null, seqSlot: Int32Array.from([0]), numSlots: 1 } : null;
        const prompt = tokens.subarray(0, 7);
        add(m.nextTokenLogits(prompt, mem1));
        const dec = m.decoder(mem1);
        add(dec.prefill(prompt));
        for (let i = 0; i < 5; i++) add(dec.step(tokens[10 + i]!));
        if (!withMem) {
          const f = path.join(dir, `ck${ci}.safetensors`);
          await saveCheckpoint(f, { model: m, tokenizer: new ByteTokenizer() });
          if (cfg.vocabSize === 259) add(new Uint8Array(await readFile(f)));
        }
      }
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  return h.digest('hex');
}
