/**
 * The native boundary: every entry point of the addon (kernels, optimizer, model creation and
 * batches, memory bank methods) called with each argument replaced in turn by hostile values —
 * detached buffers, other typed-array kinds, plain arrays and objects, negative, fractional, NaN,
 * infinite and huge numbers, strings, symbols, BigInts — must return or throw a HiermemError with
 * a code: never another exception, never a crash. A detached buffer or a wrong kind of typed
 * array is always refused. Dimensions whose product overflows int64, views with a byte offset,
 * a model whose parameter buffer was transferred away, and async calls are covered too.
 * Run under AddressSanitizer by `npm run test:asan`.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import v8 from 'node:v8';
import vm from 'node:vm';
import { loadNative } from '../lib/native.js';
import { HiermemError } from '../lib/errors.js';
import type { NativeMemorySpec } from '../lib/native-types.js';

const native = loadNative();

type TypedCtor = Float32ArrayConstructor | Int32ArrayConstructor | Float64ArrayConstructor;

function detached<T extends TypedCtor>(ctor: T, n: number): InstanceType<T> {
  const a = new ctor(n) as InstanceType<T>;
  structuredClone(a.buffer, { transfer: [a.buffer as ArrayBuffer] });
  assert.equal(a.length, 0);
  return a;
}

/** Replacement values for an argument, each made fresh for every call. */
function hostileFor(valid: unknown): Array<[string, () => unknown]> {
  const out: Array<[string, () => unknown]> = [
    ['undefined', () => undefined], ['null', () => null], ['0', () => 0], ['-1', () => -1], ['-2^31', () => -(2 ** 31)],
    ['2^31', () => 2 ** 31], ['2^32', () => 2 ** 32], ['2^53', () => 2 ** 53], ['2^64', () => 2 ** 64], ['1.5', () => 1.5],
    ['NaN', () => NaN], ['Infinity', () => Infinity], ['-Infinity', () => -Infinity], ['"4"', () => '4'], ['""', () => ''],
    ['{}', () => ({})], ['[]', () => []], ['[1, 2]', () => [1, 2]], ['symbol', () => Symbol('x')], ['1n', () => 1n],
    ['() => 1', () => () => 1], ['true', () => true],
    ['Float32Array(0)', () => new Float32Array(0)], ['Float32Array(1)', () => new Float32Array(1)],
    ['Int32Array(0)', () => new Int32Array(0)], ['Int32Array(1) of -1', () => new Int32Array(1).fill(-1)],
    ['Uint8Array(64)', () => new Uint8Array(64)], ['DataView(64)', () => new DataView(new ArrayBuffer(64))],
    ['ArrayBuffer(64)', () => new ArrayBuffer(64)],
  ];
  if (ArrayBuffer.isView(valid) && !(valid instanceof DataView)) {
    const v = valid as Float32Array | Int32Array | Float64Array;
    const n = v.length;
    const ctor = v.constructor as TypedCtor;
    out.push(
      [`detached ${ctor.name}(${n})`, () => detached(ctor, n)],
      [`${ctor.name}(${n + 1})`, () => new ctor(n + 1)],
      [`${ctor.name}(${Math.max(0, n - 1)})`, () => new ctor(Math.max(0, n - 1))],
      [`Float64Array(${n})`, () => new Float64Array(n)], [`Int32Array(${n})`, () => new Int32Array(n)],
      [`Uint32Array(${n})`, () => new Uint32Array(n)], [`Float32Array(${n})`, () => new Float32Array(n)],
      [`Int32Array(${n}) of 2^31-1`, () => new Int32Array(n).fill(2 ** 31 - 1)],
      [`Int32Array(${n}) of -2`, () => new Int32Array(n).fill(-2)],
    );
  }
  if (typeof valid === 'object' && valid !== null && !ArrayBuffer.isView(valid) && !Array.isArray(valid)) {
    // objects (hyper, spec, storage, batch, memory): each field replaced in turn
    for (const key of Object.keys(valid)) {
      const field = (valid as Record<string, unknown>)[key];
      for (const [label, make] of hostileFor(field).slice(0, 40)) {
        out.push([`{ ${key}: ${label} }`, () => ({ ...(valid as object), [key]: make() })]);
      }
      out.push([`{ without ${key} }`, () => { const o = { ...(valid as Record<string, unknown>) }; delete o[key]; return o; }]);
    }
  }
  return out;
}

const tally = { calls: 0, ok: 0, typed: 0 };

/** Calls fn; success or a HiermemError (returned), anything else fails the test. */
function outcome(label: string, fn: () => unknown): HiermemError | 'ok' {
  tally.calls++;
  try {
    const r = fn();
    if (r instanceof Promise) throw new Error('use outcomeAsync for async entry points');
    tally.ok++;
    return 'ok';
  } catch (e) {
    assert.ok(e instanceof HiermemError && /^E_[A-Z_]+$/.test(e.code), `${label}: not a HiermemError: ${String(e)}`);
    tally.typed++;
    return e;
  }
}

async function outcomeAsync(label: string, fn: () => Promise<unknown>): Promise<HiermemError | 'ok'> {
  tally.calls++;
  try {
    await fn();
    tally.ok++;
    return 'ok';
  } catch (e) {
    assert.ok(e instanceof HiermemError && /^E_[A-Z_]+$/.test(e.code), `${label}: not a HiermemError: ${String(e)}`);
    tally.typed++;
    return e;
  }
}

function isArrayArg(v: unknown): v is Float32Array | Int32Array | Float64Array {
  return v instanceof Float32Array || v instanceof Int32Array || v instanceof Float64Array;
}

/** Each argument of `args()` replaced in turn by each hostile value for it: the calls a sweep makes. */
function* hostileCalls(name: string, args: () => unknown[]): Generator<{ label: string; valid: unknown; v: unknown; a: unknown[] }> {
  const n = args().length;
  for (let i = 0; i < n; i++) {
    const valid = args()[i];
    for (const [label, make] of hostileFor(valid)) {
      const a = args();
      const v = make();
      a[i] = v;
      yield { label: `${name} arg ${i} = ${label}`, valid, v, a };
    }
  }
}

/** Detached buffers and other kinds of typed array in a typed-array slot must be refused. */
function checkRefused(call: { label: string; valid: unknown; v: unknown }, r: unknown): void {
  const { label, valid, v } = call;
  if (!isArrayArg(valid) || !ArrayBuffer.isView(v)) return;
  if (label.includes(' = detached') || v.constructor !== valid.constructor) {
    assert.ok(r instanceof HiermemError, `${label} must be refused`);
    assert.equal(r.code, 'E_INVALID_ARGUMENT', `${label}: ${r.message}`);
  }
}

/** Calls `fn(...args())` once as given (must succeed), then every hostile call. */
function sweep(name: string, fn: (...a: unknown[]) => unknown, args: () => unknown[]): void {
  assert.equal(outcome(`${name}(valid)`, () => fn(...args())), 'ok', `${name} with valid arguments`);
  for (const call of hostileCalls(name, args)) checkRefused(call, outcome(call.label, () => fn(...call.a)));
}

/** sweep for an entry point that returns a Promise: every call is awaited (a bank is busy until then). */
async function sweepAsync(name: string, fn: (...a: unknown[]) => Promise<unknown>, args: () => unknown[]): Promise<void> {
  assert.equal(await outcomeAsync(`${name}(valid)`, () => fn(...args())), 'ok', `${name} with valid arguments`);
  for (const call of hostileCalls(name, args)) checkRefused(call, await outcomeAsync(call.label, async () => fn(...call.a)));
}

// ---- shapes of the valid calls ------------------------------------------------------------------
const B = 2, T = 3, N = B * T, C = 4, V = 5, H = 2, hd = 2, F = 3, R = 2, S = 2;
const f32 = (n: number, v = 0.1) => new Float32Array(n).fill(v);
const toks = () => Int32Array.from({ length: N }, (_, i) => i % V);

test('kernels: every argument replaced by hostile values → a typed error or success, never a crash', () => {
  sweep('embeddingForward', native.embeddingForward as never, () => [f32(N * C), toks(), f32(V * C), V, C]);
  sweep('embeddingBackward', native.embeddingBackward as never, () => [f32(V * C), f32(N * C), toks(), V, C]);
  sweep('rmsnormForward', native.rmsnormForward as never, () => [f32(N * C), f32(N), f32(N * C), f32(C), N, C, 1e-5]);
  sweep('rmsnormBackward', native.rmsnormBackward as never, () => [f32(N * C), f32(C), f32(N * C), f32(N * C), f32(C), f32(N, 1), N, C]);
  sweep('ropeForward', native.ropeForward as never, () => [f32(N * H * hd), new Int32Array(N), N, H, hd, 1e4]);
  sweep('ropeBackward', native.ropeBackward as never, () => [f32(N * H * hd), new Int32Array(N), N, H, hd, 1e4]);
  const n = B * T * H * hd;
  sweep('attentionForward', native.attentionForward as never, () => [f32(n), f32(B * H * T), f32(n), f32(n), f32(n), new Int32Array(B * T), B, T, H, hd]);
  sweep('attentionBackward', native.attentionBackward as never, () => [f32(n), f32(n), f32(n), f32(n), f32(n), f32(n), f32(n), f32(n), f32(B * H * T), null, B, T, H, hd]);
  sweep('swigluForward', native.swigluForward as never, () => [f32(7), f32(7), f32(7), 7]);
  sweep('swigluBackward', native.swigluBackward as never, () => [f32(7), f32(7), f32(7), f32(7), f32(7), 7]);
  sweep('ffnForward', native.ffnForward as never, () => [f32(N * C), f32(N * F), f32(N * F), f32(N * C), f32(F * C), f32(F * C), f32(C * F), N, C, F]);
  sweep('ffnBackward', native.ffnBackward as never, () => [f32(N * C), f32(F * C), f32(F * C), f32(C * F), f32(N * C), f32(N * C), f32(N * F), f32(N * F), f32(F * C), f32(F * C), f32(C * F), N, C, F]);
  sweep('classifierForwardBackward', native.classifierForwardBackward as never, () => [f32(N), f32(N * C), f32(V * C), f32(N * C), f32(V * C), toks(), N, C, V, 1]);
  sweep('matmulNT', native.matmulNT as never, () => [f32(3 * 2), f32(3 * 4), f32(2 * 4), 3, 2, 4]);
  const seqSlot = () => Int32Array.from([0, 1]);
  sweep('ffnMemoryForward', native.ffnMemoryForward as never, () => [f32(N * C), f32(N * R), f32(N * R), f32(N * C), f32(S * 3 * R * C), seqSlot(), B, T, C, R, S]);
  sweep('ffnMemoryBackward', native.ffnMemoryBackward as never, () => [f32(N * C), f32(S * 3 * R * C), f32(N * C), f32(N * C), f32(N * R), f32(N * R), f32(S * 3 * R * C), seqSlot(), B, T, C, R, S]);
});

test('optimizer and addon settings: hostile arguments → typed errors', () => {
  const threads = native.getNumThreads();
  try {
    sweep('globalNorm', native.globalNorm as never, () => [f32(10)]);
    const hyper = { lr: 1e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, step: 1, gradScale: 1 };
    sweep('adamwStep', native.adamwStep as never, () => [f32(10), f32(10), f32(10), f32(10), Float64Array.from([0, 6, 0.1, 6, 4, 0]), { ...hyper }]);
    sweep('setNumThreads', native.setNumThreads as never, () => [1]);
  } finally {
    native.setNumThreads(threads);
  }
});

test('dimensions whose product overflows int64 are refused (they once passed the length checks and crashed)', () => {
  // N * H * hd = 2^64 wraps to 0: an empty x passed, and rope ran over 2^64 elements
  const r1 = outcome('rope overflow', () => native.ropeForward(new Float32Array(0), new Int32Array(4), 4, 2 ** 31, 2 ** 31, 1e4));
  assert.ok(r1 instanceof HiermemError && r1.code === 'E_INVALID_ARGUMENT', String(r1));
  const r2 = outcome('attention overflow', () => native.attentionForward(f32(0), f32(0), f32(0), f32(0), f32(0), null, 2 ** 21, 2 ** 22, 2 ** 21, 1));
  assert.ok(r2 instanceof HiermemError && r2.code === 'E_INVALID_ARGUMENT', String(r2));
  const r3 = outcome('ffn memory overflow', () => native.ffnMemoryForward(f32(0), f32(0), f32(0), f32(0), f32(0), new Int32Array(1), 1, 2 ** 31, 2 ** 31, 2 ** 31, 1));
  assert.ok(r3 instanceof HiermemError, String(r3));
  const r4 = outcome('matmul overflow', () => native.matmulNT(f32(0), f32(0), f32(0), 2 ** 31, 2 ** 31, 0));
  assert.ok(r4 instanceof HiermemError || r4 === 'ok');
});

test('views with a byte offset: kernels read and write exactly their view', () => {
  const big = new Float32Array(N * C + 10).fill(7);
  const out = big.subarray(5, 5 + N * C);
  native.embeddingForward(out, toks(), Float32Array.from({ length: V * C }, (_, i) => i), V, C);
  assert.deepEqual([...big.subarray(0, 5), ...big.subarray(5 + N * C)], new Array(10).fill(7));
  assert.equal(out[0], 0);
  assert.equal(out[C], C); // token 1 → row 1
  const tokBuf = new Int32Array(N + 2).fill(99); // out-of-range sentinels around the view
  const tokView = tokBuf.subarray(1, 1 + N);
  tokView.set(toks());
  native.embeddingForward(f32(N * C), tokView, f32(V * C), V, C);
});

const DIMS = { vocabSize: 11, dModel: 8, nLayers: 1, nHeads: 2, headDim: 4, ffnHidden: 8, seqLen: 4, normEps: 1e-5, ropeBase: 1e4 };

function makeModel(withMemory = false) {
  const layout = native.anchorLayout(DIMS);
  const last = layout[layout.length - 1]!;
  const params = f32(last.offset + last.size, 0.01), grads = f32(last.offset + last.size);
  const mem = withMemory ? { R: 3, layerToMemory: Int32Array.from([0]) } : null;
  return { params, grads, model: native.createAnchorModel(DIMS, params, grads, 2, mem) };
}

test('model creation and batches: hostile dims, buffers, batch fields and memory inputs → typed errors', async () => {
  sweep('anchorLayout', native.anchorLayout as never, () => [{ ...DIMS }]);
  const { params } = makeModel();
  sweep('createAnchorModel', native.createAnchorModel as never, () => [{ ...DIMS }, f32(params.length), f32(params.length), 2, { R: 3, layerToMemory: Int32Array.from([0]) }]);

  const { model } = makeModel(true);
  const Tm = DIMS.seqLen;
  const batch = () => ({
    tokens: Int32Array.from({ length: 2 * Tm }, (_, i) => i % 11), targets: Int32Array.from({ length: 2 * Tm }, (_, i) => (i + 1) % 11),
    docStart: new Int32Array(2 * Tm), batchSize: 2,
    memory: { fetched: f32(2 * 1 * 3 * 3 * 8), dfetched: f32(2 * 1 * 3 * 3 * 8), seqSlot: Int32Array.from([0, 1]), numSlots: 2 },
  });
  sweep('forwardBackward', (b) => model.forwardBackward(b as never), () => [batch()]);
  sweep('forwardLoss', (b) => model.forwardLoss(b as never), () => [batch()]);
  sweep('lastLogits', (t, m) => model.lastLogits(t as never, m as never), () => [Int32Array.from([1, 2, 3]), { fetched: f32(72), dfetched: null, seqSlot: Int32Array.from([0]), numSlots: 1 }]);
  // KV cache: each hostile argument refused with a code, a fresh cache per call
  const mem1 = () => ({ fetched: f32(72), dfetched: null, seqSlot: Int32Array.from([0]), numSlots: 1 });
  sweep('kvCacheCreate', () => model.kvCacheCreate(), () => []);
  sweep('prefill', (c, t, l, m) => model.prefill(c as never, t as never, l as never, m as never), () => [model.kvCacheCreate(), Int32Array.from([1, 2, 3]), f32(11), mem1()]);
  sweep('decodeStep', (c, t, l, m) => model.decodeStep(c as never, t as never, l as never, m as never), () => [model.kvCacheCreate(), 1, f32(11), mem1()]);
  // async: the same hostile batches are refused before any work is queued; the model stays usable
  for (const [label, make] of hostileFor(batch())) {
    await outcomeAsync(`forwardBackwardAsync ${label}`, async () => model.forwardBackwardAsync(make() as never));
  }
  assert.ok(Number.isFinite(await model.forwardBackwardAsync(batch())));
  // a second async call while one runs: E_BUSY, never a race
  const first = model.forwardLossAsync(batch());
  const second = await outcomeAsync('concurrent', () => model.forwardLossAsync(batch()));
  assert.ok(second instanceof HiermemError && second.code === 'E_BUSY');
  await first;
});

test('a model whose parameter buffer was transferred away refuses every call (no dangling pointer)', async () => {
  v8.setFlagsFromString('--expose-gc');
  const gc = vm.runInNewContext('gc') as () => void;
  const { params, model } = makeModel();
  const batch = { tokens: new Int32Array(4), targets: new Int32Array(4), docStart: null, batchSize: 1 };
  assert.ok(Number.isFinite(model.forwardLoss(batch)));
  let moved: ArrayBuffer | null = structuredClone(params.buffer, { transfer: [params.buffer] });
  assert.equal(moved.byteLength > 0, true);
  moved = null; // the memory the model pointed at can now be freed
  gc();
  for (const call of [() => model.forwardLoss(batch), () => model.forwardBackward(batch), () => model.lastLogits(Int32Array.from([1]))]) {
    const r = outcome('detached params', call);
    assert.ok(r instanceof HiermemError && r.code === 'E_DISPOSED', String(r));
  }
  const r = await outcomeAsync('detached params async', () => model.forwardBackwardAsync(batch));
  assert.ok(r instanceof HiermemError && r.code === 'E_DISPOSED');
});

test('memory bank methods: hostile ids, paths, blocks, kinds, buffers and paths → typed errors', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'hiermem-boundary-'));
  const spec: NativeMemorySpec = { k: 2, levels: [2, 3], memoryLayers: 1, dModel: 4, generic: true, optimizer: true };
  sweep('memoryBankTensors', native.memoryBankTensors as never, () => [{ ...spec, levels: [2, 3] }]);
  sweep('createMemoryBank', native.createMemoryBank as never, () => [{ ...spec, levels: [2, 3] }, 1, { kind: 'ram' }]);
  const bank = native.createMemoryBank(spec, 1, { kind: 'ram' });
  const slot = 1 * 3 * 5 * 4; // Lm * 3 * R * d
  const paths = () => Int32Array.from([1, 2, -1, 0]); // a path and the generic block
  sweep('gather', (a, b) => bank.gather(a as never, b as never), () => [f32(2 * slot), paths()]);
  sweep('uniqueBlocks', (a) => bank.uniqueBlocks(a as never), () => [paths()]);
  const blocks = bank.uniqueBlocks(paths());
  const blockFloats = 1 * 3 * 2 * 4 + 1 * 3 * 3 * 4 + 1 * 3 * 5 * 4;
  sweep('scatterAdd', (a, b, c, d) => bank.scatterAdd(a as never, b as never, c as never, d as never), () => [f32(blockFloats), Int32Array.from(blocks), f32(2 * slot), paths()]);
  sweep('adamwUpdate', (a, b, c, d) => bank.adamwUpdate(a as never, b as never, c as never, d as never),
    () => [Int32Array.from(blocks), f32(blockFloats, 0.01), { lr: 1e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, gradScale: 1 }, 0.01]);
  // the async twins share the checks (the worker runs only what passed them)
  await sweepAsync('gatherAsync', (a, b) => bank.gatherAsync(a as never, b as never), () => [f32(2 * slot), paths()]);
  await sweepAsync('scatterAddAsync', (a, b, c, d) => bank.scatterAddAsync(a as never, b as never, c as never, d as never),
    () => [f32(blockFloats), Int32Array.from(blocks), f32(2 * slot), paths()]);
  await sweepAsync('adamwUpdateAsync', (a, b, c, d) => bank.adamwUpdateAsync(a as never, b as never, c as never, d as never),
    () => [Int32Array.from(blocks), f32(blockFloats, 0.01), { lr: 1e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, gradScale: 1 }, 0.01]);
  for (const kind of ['weight', 'm', 'v']) {
    sweep(`readBlock ${kind}`, (k, l, n, o) => bank.readBlock(k as never, l as never, n as never, o as never), () => [kind, 1, 3, f32(1 * 3 * 3 * 4)]);
    sweep(`writeBlock ${kind}`, (k, l, n, o) => bank.writeBlock(k as never, l as never, n as never, o as never), () => [kind, 0, 1, f32(1 * 3 * 2 * 4)]);
  }
  sweep('blockSteps', (l, n) => bank.blockSteps(l as never, n as never), () => [1, 2]);
  sweep('prefetch', (a) => bank.prefetch(a as never), () => [paths()]);
  sweep('pinLevels', (n) => bank.pinLevels(n as never), () => [0]);
  const file = path.join(dir, 'data.bin');
  await writeFile(file, new Uint8Array(8 + bank.bytes));
  sweep('saveData', (p, o) => bank.saveData(p as never, o as never), () => [file, 8]);
  sweep('loadData', (p, o) => bank.loadData(p as never, o as never), () => [file, 8]);
  assert.ok(outcome('path with NUL', () => bank.saveData(`${file}\0.x`, 8)) instanceof HiermemError);
  bank.close();
  for (const call of [() => bank.gather(f32(slot), Int32Array.from([1, 2])), () => bank.readBlock('weight', 0, 0, f32(24)), () => bank.bytes, () => bank.flush(),
    () => bank.gatherAsync(f32(slot), Int32Array.from([1, 2])), () => bank.adamwUpdateAsync(Int32Array.of(0, 0), f32(24), { lr: 1e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, gradScale: 1 }, 0)]) {
    const r = outcome('closed bank', call);
    assert.ok(r instanceof HiermemError && r.code === 'E_DISPOSED', String(r));
  }
  await rm(dir, { recursive: true });
});

test('boundary call count', (t) => {
  t.diagnostic(`${tally.calls} native calls with hostile arguments: ${tally.ok} returned, ${tally.typed} typed errors, 0 crashes`);
  assert.ok(tally.calls > 1000);
});

test('HIERMEM_ADDON_PATH loads that addon, and refuses anything but an absolute path to a loadable .node file', async () => {
  const { execFile } = await import('node:child_process');
  const { promisify } = await import('node:util');
  const { fileURLToPath } = await import('node:url');
  const nativeJs = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../lib/native.js');
  const dir = await mkdtemp(path.join(tmpdir(), 'hiermem-addon-'));
  const notAddon = path.join(dir, 'fake.node');
  await writeFile(notAddon, 'not a shared object');
  const probe = async (value: string) => {
    const script = `import(${JSON.stringify(nativeJs)}).then((m) => { try { m.loadNative(); console.log('ok'); } catch (e) { console.log(e.code + ' ' + e.message); } })`;
    const env = { ...process.env, HIERMEM_ADDON_PATH: value };
    return (await promisify(execFile)(process.execPath, ['-e', script], { env })).stdout.trim();
  };
  const real = path.resolve(path.dirname(nativeJs), '../../build/Release/hiermem.node');
  const { existsSync } = await import('node:fs');
  if (existsSync(real)) assert.equal(await probe(real), 'ok'); // (a prebuild install has no build/)
  assert.match(await probe('build/Release/hiermem.node'), /^E_NATIVE_UNAVAILABLE .*absolute path/);
  assert.match(await probe(path.join(dir, 'missing.node')), /^E_NATIVE_UNAVAILABLE .*cannot stat/);
  assert.match(await probe(dir + '.node'), /^E_NATIVE_UNAVAILABLE/);
  assert.match(await probe(notAddon), /^E_NATIVE_UNAVAILABLE .*cannot load/);
  assert.match(await probe(path.join(dir, 'x.so')), /^E_NATIVE_UNAVAILABLE .*\.node file/);
  await rm(dir, { recursive: true });
});
