/**
 * Hostile input for every loader of outside bytes: property-based tests (fast-check) mutate valid
 * files — bit flips, truncation (at random points and at every structural boundary), appended
 * bytes, a random 8-byte header length, edited or replaced header JSON (hostile dtypes, huge
 * shapes and offsets, duplicate keys, edited metadata and config JSON), random lines — and load
 * them. Every outcome must be success or a HiermemError with a code: never another exception,
 * never a crash, never a hang (each load has a time limit). What loads is then used (a bank
 * gathers and trains a block, a tree routes a text, a checkpoint's model computes a loss).
 *
 * Seeded and bounded: HIERMEM_FUZZ_RUNS=n runs n inputs per property (default 500: about 5,000
 * inputs in all, a few seconds), HIERMEM_FUZZ_SEED picks another seed; `npm run fuzz` is the long
 * run (5,000 per property).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile, copyFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { HiermemError } from '../lib/errors.js';
import { AnchorModel } from '../lib/model/anchor.js';
import { AdamW } from '../lib/train/adamw.js';
import { ByteTokenizer } from '../lib/data/tokenizer.js';
import { saveCheckpoint, loadCheckpoint } from '../lib/train/checkpoint.js';
import { MemoryBank } from '../lib/memory/bank.js';
import { HierarchicalModel } from '../lib/memory/memory-model.js';
import { resolveMemorySpec } from '../lib/memory/spec.js';
import { saveHierarchicalCheckpoint, loadHierarchicalCheckpoint } from '../lib/train/memory-trainer.js';
import { RetrievalTree } from '../lib/retrieval/tree.js';
import { readJsonlDocuments, readTextDocuments } from '../lib/data/corpus.js';
import { readProbes } from '../lib/eval/probes.js';
import { parseModelConfigJson } from '../lib/io/model-config.js';
import { loadHfTokenizer } from '../lib/data/hf-tokenizer.js';
import { byteLevelFixture } from './tokenizer-fixtures.js';
import { MODEL_PRESETS, resolveModelConfig, anchorParamCount } from '../lib/model/config.js';
import { prepareData } from '../lib/data/prepare.js';
import { PreparedData } from '../lib/data/prepared.js';
import { WindowSampler } from '../lib/data/windows.js';
import { MANIFEST_FILE, PACKED_FILES, SHARD_DIR, shardFileName } from '../lib/data/prepared-format.js';
import { cp, mkdir, readdir } from 'node:fs/promises';
import { makeShardedCheckpoint, editManifest, MANIFEST_FIELDS } from './dist-shard-fixture.js';
import { loadHfModel } from '../lib/io/hf-import.js';
import { fixture as hfFixture } from './hf-fixtures.js';

const RUNS = Math.max(1, Number(process.env.HIERMEM_FUZZ_RUNS ?? '') || 500);
const SEED = Number(process.env.HIERMEM_FUZZ_SEED ?? '') || 20250601;
const LOAD_LIMIT_MS = 15_000;

const tok = new ByteTokenizer();
const CFG = { vocabSize: tok.vocabSize, dModel: 8, nLayers: 1, nHeads: 1, headDim: 8, ffnHidden: 16, seqLen: 8, seed: 2 };
const SPEC = { k: 2, levels: [2, 3], generic: true };

let dir = '';
const valid = new Map<string, Uint8Array>();
/** target → outcome ('ok' or an error code) → count */
const tally = new Map<string, Map<string, number>>();

function count(target: string, outcome: string): void {
  const m = tally.get(target) ?? new Map<string, number>();
  m.set(outcome, (m.get(outcome) ?? 0) + 1);
  tally.set(target, m);
}

/** Runs a load (and the use of what it loaded): success or a HiermemError with a code; anything else fails. */
async function outcome(target: string, fn: () => Promise<void>): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const limit = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${target}: a load took more than ${LOAD_LIMIT_MS} ms (a hang?)`)), LOAD_LIMIT_MS);
  });
  try {
    await Promise.race([fn(), limit]);
    count(target, 'ok');
  } catch (e) {
    if (!(e instanceof HiermemError) || typeof e.code !== 'string' || !e.code.startsWith('E_')) {
      throw new Error(`${target}: not a HiermemError: ${e instanceof Error ? `${e.name}: ${e.message}\n${e.stack}` : String(e)}`);
    }
    count(target, e.code);
  } finally {
    clearTimeout(timer);
  }
}

// ---- mutations of a safetensors file --------------------------------------------------------

interface Parts { header: Record<string, unknown>; headerText: string; data: Uint8Array }

function split(bytes: Uint8Array): Parts {
  const n = Number(Buffer.from(bytes).readBigUInt64LE(0));
  const headerText = Buffer.from(bytes.subarray(8, 8 + n)).toString('utf8');
  return { header: JSON.parse(headerText) as Record<string, unknown>, headerText, data: bytes.subarray(8 + n) };
}

function join(headerText: string, data: Uint8Array): Uint8Array {
  const h = Buffer.from(headerText, 'utf8');
  const pad = (8 - (h.length % 8)) % 8;
  const out = new Uint8Array(8 + h.length + pad + data.length);
  Buffer.from(out.buffer).writeBigUInt64LE(BigInt(h.length + pad), 0);
  out.set(h, 8);
  out.fill(0x20, 8 + h.length, 8 + h.length + pad);
  out.set(data, 8 + h.length + pad);
  return out;
}

/** Values a hostile header may hold where numbers, shapes, offsets or strings are expected. */
const hostile: fc.Arbitrary<unknown> = fc.oneof(
  fc.constantFrom(0, -1, 1, 2, 7, 1.5, -0, 65536, 1 << 20, 2 ** 31 - 1, 2 ** 31, 2 ** 32, 2 ** 53 - 1, 2 ** 53, 2 ** 64, 1e308, -1e308,
    '1', '', 'F32', 'I32', 'F64', 'U8', 'BOOL', 'x', null, true, [], {}, [0], [1, 1], [0, 2 ** 53], [2 ** 40, 2 ** 40 + 4], [-1, 4], [4, 0]),
  fc.array(fc.oneof(fc.integer({ min: -2, max: 70000 }), fc.constantFrom(2 ** 31, 2 ** 32, 2 ** 53, 1 << 20)), { maxLength: 6 }),
  fc.tuple(fc.nat({ max: 2 ** 31 }), fc.nat({ max: 2 ** 31 })),
  fc.jsonValue({ maxDepth: 2 }),
);

type Mutation = { label: string; apply: (bytes: Uint8Array) => Uint8Array };

/** Edits of a JSON text stored in a metadata value (model_config, trainer, optimizer, spec, tree, embedder). */
function editJsonText(text: string, key: string, value: unknown, keyIndex: number): string {
  let o: unknown;
  try {
    o = JSON.parse(text);
  } catch {
    return text;
  }
  if (typeof o !== 'object' || o === null || Array.isArray(o)) return JSON.stringify(value);
  const keys = Object.keys(o);
  const k = keys.length > 0 && keyIndex >= 0 ? keys[keyIndex % keys.length]! : key;
  (o as Record<string, unknown>)[k] = value;
  return JSON.stringify(o);
}

function safetensorsMutation(): fc.Arbitrary<Mutation> {
  const flips = fc.record({
    inHeader: fc.boolean(),
    bits: fc.array(fc.tuple(fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), fc.nat({ max: 7 })), { minLength: 1, maxLength: 8 }),
  }).map(({ inHeader, bits }): Mutation => ({
    label: 'flip',
    apply: (b) => {
      const out = Uint8Array.from(b);
      const hl = Number(Buffer.from(b).readBigUInt64LE(0));
      for (const [f, bit] of bits) {
        const pos = inHeader ? Math.floor(f * (8 + hl)) : Math.floor(f * b.length);
        out[pos]! ^= 1 << bit;
      }
      return out;
    },
  }));
  // truncation anywhere, or at a structural boundary (length field, header end, tensor edges)
  const truncate = fc.tuple(fc.double({ min: 0, max: 1, noNaN: true }), fc.nat(), fc.boolean(), fc.integer({ min: -2, max: 2 })).map(([f, i, atBoundary, delta]): Mutation => ({
    label: 'truncate',
    apply: (b) => {
      if (!atBoundary) return b.subarray(0, Math.floor(f * b.length));
      const { header } = split(b);
      const hl = Number(Buffer.from(b).readBigUInt64LE(0));
      const bounds = [0, 4, 8, 8 + hl];
      for (const v of Object.values(header)) {
        const off = (v as { data_offsets?: number[] }).data_offsets;
        if (off) bounds.push(8 + hl + off[0]!, 8 + hl + off[1]!);
      }
      const at = Math.max(0, Math.min(b.length - 1, bounds[i % bounds.length]! + delta));
      return b.subarray(0, at);
    },
  }));
  const append = fc.uint8Array({ minLength: 1, maxLength: 64 }).map((extra): Mutation => ({
    label: 'append', apply: (b) => Uint8Array.from([...b, ...extra]),
  }));
  const lengthField = fc.oneof(fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), fc.bigInt({ min: 0n, max: 1n << 20n }), fc.constantFrom(0n, 1n, 7n, 8n, 100_000_000n, 100_000_001n, 2n ** 63n))
    .map((n): Mutation => ({
      label: 'length', apply: (b) => {
        const out = Uint8Array.from(b);
        Buffer.from(out.buffer).writeBigUInt64LE(n, 0);
        return out;
      },
    }));
  const tensorField = fc.tuple(fc.nat(), fc.constantFrom('dtype', 'shape', 'data_offsets', 'extra'), hostile).map(([i, field, value]): Mutation => ({
    label: 'tensor-field', apply: (b) => {
      const { header, data } = split(b);
      const names = Object.keys(header).filter((k) => k !== '__metadata__');
      const t = header[names[i % names.length]!] as Record<string, unknown>;
      t[field] = value;
      return join(JSON.stringify(header), data);
    },
  }));
  // a consistent but different shape/offsets (same bytes, other split): passes the tiling check
  const reshape = fc.tuple(fc.nat(), fc.nat({ max: 3 })).map(([i, how]): Mutation => ({
    label: 'reshape', apply: (b) => {
      const { header, data } = split(b);
      const names = Object.keys(header).filter((k) => k !== '__metadata__');
      const t = header[names[i % names.length]!] as { dtype: string; shape: number[]; data_offsets: [number, number] };
      const elems = t.shape.reduce((a, d) => a * d, 1);
      t.shape = [[elems], [1, elems], [elems, 1, 1], []][how]!;
      if (how === 3) t.shape = elems === 1 ? [] : [elems];
      return join(JSON.stringify(header), data);
    },
  }));
  const dropTensor = fc.nat().map((i): Mutation => ({
    label: 'drop-tensor', apply: (b) => {
      const { header, data } = split(b);
      const names = Object.keys(header).filter((k) => k !== '__metadata__');
      delete header[names[i % names.length]!];
      return join(JSON.stringify(header), data);
    },
  }));
  const metadata = fc.tuple(fc.nat(), fc.oneof(fc.constant(null), fc.string({ maxLength: 12 })), fc.oneof(fc.string({ maxLength: 40 }), hostile.map((v) => JSON.stringify(v) ?? 'null')), fc.boolean(), fc.integer({ min: -1, max: 20 }))
    .map(([i, newKey, value, editJson, keyIndex]): Mutation => ({
      label: editJson ? 'metadata-json' : 'metadata', apply: (b) => {
        const { header, data } = split(b);
        const md = (header.__metadata__ ?? {}) as Record<string, string>;
        const keys = Object.keys(md);
        const key = newKey ?? keys[i % keys.length] ?? 'format';
        if (editJson && md[key] !== undefined) {
          let v: unknown;
          try { v = JSON.parse(value); } catch { v = value; }
          md[key] = editJsonText(md[key], String(newKey ?? 'x'), v, keyIndex);
        } else {
          md[key] = value;
        }
        header.__metadata__ = md;
        return join(JSON.stringify(header), data);
      },
    }));
  const dropMetadata = fc.nat().map((i): Mutation => ({
    label: 'drop-metadata', apply: (b) => {
      const { header, data } = split(b);
      const md = header.__metadata__ as Record<string, string>;
      delete md[Object.keys(md)[i % Object.keys(md).length]!];
      return join(JSON.stringify(header), data);
    },
  }));
  const replaceHeader = fc.jsonValue({ maxDepth: 3 }).map((v): Mutation => ({
    label: 'random-header', apply: (b) => join(JSON.stringify(v) ?? 'null', split(b).data),
  }));
  const duplicateKey = fc.nat().map((i): Mutation => ({
    label: 'duplicate-key', apply: (b) => {
      const { header, headerText, data } = split(b);
      const names = Object.keys(header);
      const name = names[i % names.length]!;
      return join(headerText.replace(/}\s*$/, `,${JSON.stringify(name)}:${JSON.stringify(header[name])}}`), data);
    },
  }));
  return fc.oneof(flips, flips, truncate, append, lengthField, tensorField, reshape, dropTensor, metadata, metadata, dropMetadata, replaceHeader, duplicateKey);
}

/** Mutations of a text file: byte flips, truncation, random lines inserted or replaced. */
function textMutation(): fc.Arbitrary<Mutation> {
  const line = fc.oneof(fc.jsonValue({ maxDepth: 2 }).map((v) => JSON.stringify(v) ?? ''), fc.string({ maxLength: 60, unit: 'binary' }),
    fc.record({ text: hostile, prompt: hostile, answer: hostile, bucket: hostile }, { requiredKeys: [] }).map((o) => JSON.stringify(o)));
  return fc.oneof(
    fc.array(fc.tuple(fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), fc.nat({ max: 7 })), { minLength: 1, maxLength: 6 })
      .map((bits): Mutation => ({ label: 'flip', apply: (b) => { const o = Uint8Array.from(b); for (const [f, bit] of bits) o[Math.floor(f * b.length)]! ^= 1 << bit; return o; } })),
    fc.double({ min: 0, max: 1, noNaN: true }).map((f): Mutation => ({ label: 'truncate', apply: (b) => b.subarray(0, Math.floor(f * b.length)) })),
    fc.tuple(fc.nat(), line, fc.boolean()).map(([i, l, replace]): Mutation => ({
      label: replace ? 'replace-line' : 'insert-line', apply: (b) => {
        const lines = Buffer.from(b).toString('utf8').split('\n');
        lines.splice(i % (lines.length + 1), replace ? 1 : 0, l);
        return Buffer.from(lines.join('\n'), 'utf8');
      },
    })),
    fc.uint8Array({ maxLength: 200 }).map((bytes): Mutation => ({ label: 'random-bytes', apply: () => bytes })),
  );
}

// ---- the valid files --------------------------------------------------------------------------

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'hiermem-fuzz-'));
  const model = AnchorModel.create(CFG, { maxBatch: 1 });
  const opt = new AdamW(model);
  const batch = { tokens: Int32Array.from({ length: 8 }, (_, i) => 65 + i), targets: Int32Array.from({ length: 8 }, (_, i) => 66 + i), docStart: null, batchSize: 1 };
  model.zeroGrad();
  await model.forwardBackward(batch);
  await opt.step(model, 1e-3);
  await saveCheckpoint(path.join(dir, 'ck.safetensors'), { model, tokenizer: tok, optimizer: opt, trainer: { step: 1, tokensSeen: 8, rngState: [1, 2, 3, 4] } });
  valid.set('checkpoint', await readFile(path.join(dir, 'ck.safetensors')));

  // a memory checkpoint and its bank, with some blocks trained (steps, m, v, initialized flags set)
  const spec = resolveMemorySpec(SPEC, CFG);
  const hm = HierarchicalModel.fromAnchor(model, MemoryBank.createInMemory(spec, CFG.dModel, { seed: 5 }), 2);
  const hopt = new AdamW(hm.anchor);
  await hm.trainStep({ ...batch, batchSize: 2, tokens: Int32Array.from([...batch.tokens, ...batch.tokens]), targets: Int32Array.from([...batch.targets, ...batch.targets]),
    paths: Int32Array.from([0, 1, 1, 2]) }, hopt, { anchorLr: 1e-3, memoryLr: 1e-2, memoryWeightDecay: 0, freezeAnchor: false });
  const mdir = path.join(dir, 'mem');
  await import('node:fs/promises').then((f) => f.mkdir(mdir));
  await saveHierarchicalCheckpoint(path.join(mdir, 'ck.safetensors'), hm, tok, hopt, { step: 1, tokensSeen: 16 });
  valid.set('memory-checkpoint', await readFile(path.join(mdir, 'ck.safetensors')));
  valid.set('bank', await readFile(path.join(mdir, 'ck.bank.step-1.safetensors')));
  hm.bank.close();

  const docs = ['Osmium is a hard metal.', 'Iridium is dense.', 'Gold is yellow.', 'Platinum is grey.', 'Hafnium is rare.', 'Tungsten melts late.'];
  const { tree } = await RetrievalTree.fitTexts(docs, { k: 2, p: 2, seed: 1, hashedTfidf: { dim: 16 } });
  await tree.save(path.join(dir, 'tree.safetensors'));
  valid.set('tree', await readFile(path.join(dir, 'tree.safetensors')));

  valid.set('corpus-text', Buffer.from(docs.join('\n\n') + '\n'));
  valid.set('corpus', Buffer.from(docs.map((text) => JSON.stringify({ text })).join('\n') + '\n'));
  valid.set('probes', Buffer.from(docs.map((d, i) => JSON.stringify({ prompt: d.split(' is')[0], answer: String(i), bucket: `B${i % 2}` })).join('\n') + '\n'));
  // a prepared folder (two shards, packed by leaf): its manifest, a shard and a packed file are mutated in place
  const pdocs = Array.from({ length: 24 }, (_, i) => `${docs[i % docs.length]} Entry ${i} of the list.`);
  await writeFile(path.join(dir, 'prep.jsonl'), pdocs.map((text) => JSON.stringify({ text })).join('\n') + '\n');
  await prepareData({ corpus: path.join(dir, 'prep.jsonl'), out: path.join(dir, 'prepared'), tree: path.join(dir, 'tree.safetensors'), seqLen: 8, threads: 0, shardTokens: 400, valFraction: 0.25 });
  for (const [target, file] of PREPARED_TARGETS) valid.set(target, await readFile(path.join(dir, 'prepared', file)));
  valid.set('tokenizer', Buffer.from(JSON.stringify(byteLevelFixture(), null, 1)));
  valid.set('config', Buffer.from(JSON.stringify({ dModel: 16, nLayers: 1, nHeads: 2, headDim: 8, ffnHidden: 32, seqLen: 16, normEps: 1e-5, ropeBase: 1e4, seed: 3 })));
});

after(async (t) => {
  for (const [target, m] of [...tally].sort()) {
    const total = [...m.values()].reduce((a, b) => a + b, 0);
    const parts = [...m].sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${v}`).join(', ');
    process.stdout.write(`fuzz ${target}: ${total} inputs (${parts})\n`);
  }
  void t;
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function property(target: string, mutation: fc.Arbitrary<Mutation>, load: (file: string, bytes: Uint8Array, m: Mutation) => Promise<void>, runs = RUNS): Promise<void> {
  const file = path.join(dir, `${target}.input`);
  await fc.assert(fc.asyncProperty(mutation, async (m) => {
    const bytes = m.apply(valid.get(target)!);
    await writeFile(file, bytes);
    await outcome(target, () => load(file, bytes, m));
  }), { seed: SEED, numRuns: runs, includeErrorInReport: true });
}

// ---- the properties ----------------------------------------------------------------------------

test('fuzz: the valid files load (the mutations start from real files)', async () => {
  await loadCheckpoint(path.join(dir, 'ck.safetensors'));
  const ck = await loadHierarchicalCheckpoint(path.join(dir, 'mem', 'ck.safetensors'));
  ck.hm.bank.close();
  await RetrievalTree.load(path.join(dir, 'tree.safetensors'));
});

test('fuzz: model checkpoints (loadCheckpoint, then a loss on the loaded model)', { timeout: 600_000 }, async () => {
  await property('checkpoint', safetensorsMutation(), async (file) => {
    const ck = await loadCheckpoint(file, { maxBatch: 1 });
    const T = ck.model.config.seqLen;
    if (T > 4096) return;
    const loss = await ck.model.loss({ tokens: new Int32Array(T).fill(65), targets: new Int32Array(T).fill(66), docStart: null, batchSize: 1 });
    assert.equal(typeof loss, 'number');
  }, 2 * RUNS);
});

test('fuzz: memory checkpoints (loadHierarchicalCheckpoint with its bank beside it)', { timeout: 600_000 }, async () => {
  const bankName = 'ck.bank.step-1.safetensors';
  await copyFile(path.join(dir, 'mem', bankName), path.join(dir, bankName));
  await property('memory-checkpoint', safetensorsMutation(), async (file) => {
    const ck = await loadHierarchicalCheckpoint(file, { maxBatch: 1 });
    try {
      const T = Math.min(8, ck.hm.anchor.config.seqLen);
      ck.hm.logitsForPath(Int32Array.from([1, 2]))(new Int32Array(T).fill(65));
    } finally {
      ck.hm.bank.close();
    }
  });
});

test('fuzz: memory bank files (openFile memory-mapped, then gather; loadIntoMemory, then a sparse AdamW step)', { timeout: 600_000 }, async () => {
  await property('bank', safetensorsMutation(), async (file) => {
    const mapped = await MemoryBank.openFile(file, { writable: false });
    try {
      const p = Int32Array.from(Array.from({ length: mapped.levels }, () => 0));
      mapped.gather(p);
      mapped.readBlock(0, 0, mapped.optimizer ? 'm' : 'weight');
    } finally {
      mapped.close();
    }
    const ram = await MemoryBank.loadIntoMemory(file);
    try {
      if (!ram.optimizer) return;
      // a valid root-to-leaf path: node 1 at level 1, then first children
      const fixed = new Int32Array(ram.levels);
      fixed[0] = 1;
      for (let l = 1; l < fixed.length; l++) fixed[l] = fixed[l - 1]! * ram.spec.k;
      const { blocks, grads } = ram.blockGradients(ram.gather(fixed).fill(0.01), fixed);
      ram.adamwUpdate(blocks, grads, { lr: 1e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, gradScale: 1 }, 0);
    } finally {
      ram.close();
    }
  });
});

test('fuzz: retrieval trees (RetrievalTree.load, then route a text)', { timeout: 600_000 }, async () => {
  await property('tree', safetensorsMutation(), async (file) => {
    const tree = await RetrievalTree.load(file);
    const paths = await tree.assignTexts(['Osmium is a hard metal.', '']);
    assert.equal(paths.length, 2 * tree.p);
    for (let l = 0; l < tree.p; l++) {
      for (const row of [0, 1]) {
        const node = paths[row * tree.p + l]!;
        assert.ok(Number.isInteger(node) && node >= 0 && node < tree.k ** (l + 1), `node ${node} at level ${l}`);
      }
    }
  });
});

test('fuzz: corpus files (readJsonlDocuments, readTextDocuments)', { timeout: 600_000 }, async () => {
  await property('corpus', textMutation(), async (file) => {
    const docs = await readJsonlDocuments(file, 'text');
    assert.ok(docs.length > 0 && docs.every((d) => typeof d === 'string' && d.length > 0));
  });
  await property('corpus-text', textMutation(), async (file) => {
    const docs = await readTextDocuments(file, { separator: 'blank-line' });
    assert.ok(docs.length > 0);
  });
});

test('fuzz: probe files (readProbes)', { timeout: 600_000 }, async () => {
  await property('probes', textMutation(), async (file) => {
    const probes = await readProbes(file);
    assert.ok(probes.length > 0 && probes.every((p) => typeof p.prompt === 'string' && typeof p.answer === 'string'));
  });
});

test('fuzz: tokenizer.json (loadHfTokenizer, then encode and decode a text)', { timeout: 600_000 }, async () => {
  await property('tokenizer', fc.oneof(textMutation(), jsonPathMutation()), async (file) => {
    const t = await loadHfTokenizer(file);
    const ids = t.encode('Osmium is a hard metal. 東京 😀');
    assert.ok(ids.every((id) => id >= 0 && id < t.vocabSize));
    t.decode(ids);
  });
});

test('fuzz: model config JSON (--config: parse, resolve, and build the model when it is small)', { timeout: 600_000 }, async () => {
  const configValue = fc.oneof(hostile, fc.integer({ min: -5, max: 1 << 21 }), fc.double());
  const edit = fc.oneof(
    textMutation(),
    fc.tuple(fc.constantFrom('dModel', 'nLayers', 'nHeads', 'headDim', 'ffnHidden', 'seqLen', 'normEps', 'ropeBase', 'seed', 'vocabSize', '__proto__', 'layers'), configValue)
      .map(([k, v]): Mutation => ({ label: `field ${k}`, apply: (b) => Buffer.from(editJsonText(Buffer.from(b).toString(), k, v, -1)) })),
  );
  await property('config', edit, async (file, bytes) => {
    const extra = parseModelConfigJson(Buffer.from(bytes).toString('utf8'), file);
    const cfg = resolveModelConfig({ ...MODEL_PRESETS.tiny, ...extra, vocabSize: tok.vocabSize });
    // build and run what is small and quick (a 2^16-token attention is slow, not hung); the memory
    // checks of bigger configs are tested below
    const width = cfg.dModel + cfg.ffnHidden + cfg.nHeads * cfg.headDim;
    if (anchorParamCount(cfg) < 2_000_000 && cfg.seqLen <= 256 && cfg.nLayers * cfg.seqLen * width < 1 << 22) {
      const model = AnchorModel.create(cfg, { maxBatch: 1 });
      const T = cfg.seqLen;
      await model.loss({ tokens: new Int32Array(T).fill(65), targets: new Int32Array(T).fill(66), docStart: null, batchSize: 1 });
    }
  }, 2 * RUNS);
});

const PREPARED_TARGETS: readonly (readonly [string, string])[] = [
  ['prepared-manifest', MANIFEST_FILE], ['prepared-shard', path.join(SHARD_DIR, shardFileName(1))], ['prepared-packed', PACKED_FILES.train],
];

/** Edits of one value anywhere in a JSON document (nested paths: shards[1].bytes, packed.seqLen, ...). */
function jsonPathMutation(): fc.Arbitrary<Mutation> {
  return fc.tuple(fc.nat(), hostile, fc.boolean()).map(([i, value, drop]): Mutation => ({
    label: drop ? 'json-drop' : 'json-edit', apply: (b) => {
      const root = JSON.parse(Buffer.from(b).toString('utf8')) as unknown;
      const slots: [Record<string, unknown>, string][] = [];
      const walk = (o: unknown) => {
        if (typeof o !== 'object' || o === null) return;
        for (const [k, v] of Object.entries(o)) { slots.push([o as Record<string, unknown>, k]); walk(v); }
      };
      walk(root);
      const [o, k] = slots[i % slots.length]!;
      if (drop) delete o[k];
      else o[k] = value;
      return Buffer.from(JSON.stringify(root));
    },
  }));
}

/** A shard's JSON header edited (its length field rewritten, so the rest of the file shifts). */
function shardHeaderMutation(): fc.Arbitrary<Mutation> {
  return jsonPathMutation().map((m): Mutation => ({
    label: `shard-header ${m.label}`, apply: (b) => {
      const buf = Buffer.from(b);
      const len = buf.readUInt32LE(8);
      const json = Buffer.from(m.apply(buf.subarray(12, 12 + len)));
      const head = Buffer.alloc(12);
      buf.copy(head, 0, 0, 8);
      head.writeUInt32LE(json.length, 8);
      return Buffer.concat([head, json, buf.subarray(12 + len)]);
    },
  }));
}

test('fuzz: prepared folders (PreparedData.open, then read token streams, windows and packed sequences)', { timeout: 600_000 }, async () => {
  const binary = fc.oneof(textMutation(), fc.nat().map((n): Mutation => ({ label: 'append', apply: (b) => Buffer.concat([b, Buffer.alloc(1 + (n % 64), n & 0xff)]) })));
  const mutations: Record<string, fc.Arbitrary<Mutation>> = {
    'prepared-manifest': fc.oneof(textMutation(), jsonPathMutation(), jsonPathMutation()),
    'prepared-shard': fc.oneof(binary, shardHeaderMutation()),
    'prepared-packed': binary,
  };
  for (const [target, file] of PREPARED_TARGETS) {
    const folder = path.join(dir, `prepared-${target}`);
    await cp(path.join(dir, 'prepared'), folder, { recursive: true });
    await fc.assert(fc.asyncProperty(mutations[target]!, fc.boolean(), async (m, verify) => {
      await writeFile(path.join(folder, file), m.apply(valid.get(target)!));
      await outcome(target, async () => {
        const d = await PreparedData.open(folder, { tokenizer: tok, verify });
        try {
          for (const split of ['train', 'val'] as const) {
            const s = d.tokenStream(split);
            if (s.length > 0) s.read(0, Math.min(s.length, 64));
            if (s.length > 9) new WindowSampler(s, 8, 1).next(2);
            if (d.manifest.packed) {
              const q = d.sequences(split);
              for (let i = 0; i < Math.min(q.length, 4); i++) q.at(i);
            }
          }
        } finally {
          d.close();
        }
      });
    }), { seed: SEED, numRuns: RUNS, includeErrorInReport: true });
  }
});

test('fuzz: sharded checkpoints (the manifest edited or mutated; a shard file mutated: refused by its checksum)', { timeout: 600_000 }, async () => {
  const sdir = path.join(dir, 'sharded');
  await mkdir(sdir);
  const file = path.join(sdir, 'ck.safetensors');
  for (const r of await makeShardedCheckpoint(file)) r.hm.bank.close();
  const good = await readFile(file);
  const use = async (f: string) => {
    const ck = await loadHierarchicalCheckpoint(f, { maxBatch: 1 });
    try {
      ck.hm.logitsForPath(Int32Array.from([1, 2]))(new Int32Array(4).fill(65));
    } finally {
      ck.hm.bank.close();
    }
  };
  const input = path.join(sdir, 'manifest.input');
  await fc.assert(fc.asyncProperty(fc.constantFrom(...MANIFEST_FIELDS), fc.oneof(hostile, fc.constant(undefined)), async (field, value) => {
    await writeFile(input, editManifest(good, field, value));
    await outcome('shard-manifest', () => use(input));
  }), { seed: SEED, numRuns: Math.ceil(RUNS / 2), includeErrorInReport: true });
  await fc.assert(fc.asyncProperty(safetensorsMutation(), async (m) => {
    await writeFile(input, m.apply(good));
    await outcome('shard-manifest', () => use(input));
  }), { seed: SEED, numRuns: Math.ceil(RUNS / 2), includeErrorInReport: true });
  const shard = path.join(sdir, (await readdir(sdir)).find((n) => n.includes('.shard-1-'))!);
  const shardBytes = await readFile(shard);
  await fc.assert(fc.asyncProperty(safetensorsMutation(), async (m) => {
    const bytes = m.apply(shardBytes);
    await writeFile(shard, bytes);
    const same = Buffer.compare(Buffer.from(bytes), shardBytes) === 0;
    await outcome('bank-shard', async () => {
      await use(file);
      assert.ok(same, 'a changed shard file must be refused');
    });
  }), { seed: SEED, numRuns: Math.ceil(RUNS / 2), includeErrorInReport: true });
});

test('a model config too large for this machine is refused before allocation, with the numbers', () => {
  assert.throws(() => AnchorModel.create({ ...MODEL_PRESETS.tiny, vocabSize: 259, dModel: 65536, nLayers: 4096 }),
    (e) => e instanceof HiermemError && e.code === 'E_CONFIG_INVALID' && /GiB/.test(e.message));
  assert.throws(() => AnchorModel.create({ ...MODEL_PRESETS.tiny, vocabSize: 259, seqLen: 1 << 20 }, { maxBatch: 1 << 20 }),
    (e) => e instanceof HiermemError && e.code === 'E_CONFIG_INVALID' && /activations/.test(e.message));
});

test('fuzz: Hugging Face model folders (loadHfModel on a sharded f16 folder with config.json, the index or a shard mutated, then a loss)', { timeout: 600_000 }, async () => {
  const hdir = path.join(dir, 'hf');
  await cp(hfFixture('sharded'), hdir, { recursive: true });
  const use = async () => {
    const { model } = await loadHfModel(hdir, { seqLen: 8 });
    await model.loss({ tokens: new Int32Array(8).fill(65), targets: new Int32Array(8).fill(66), docStart: null, batchSize: 1 });
  };
  await outcome('hf-folder', use); // the valid folder loads
  const json = fc.oneof(textMutation(), jsonPathMutation());
  const targets: Array<[string, string, fc.Arbitrary<Mutation>]> = [
    ['hf-config', 'config.json', json],
    ['hf-index', 'model.safetensors.index.json', json],
    ['hf-shard', 'model-00002-of-00002.safetensors', safetensorsMutation()],
  ];
  for (const [target, name, mutation] of targets) {
    const file = path.join(hdir, name);
    const good = await readFile(file);
    await fc.assert(fc.asyncProperty(mutation, async (m) => {
      await writeFile(file, m.apply(good));
      await outcome(target, use);
    }), { seed: SEED, numRuns: RUNS, includeErrorInReport: true });
    await writeFile(file, good);
  }
});
