import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync, readFileSync, readdirSync, mkdirSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  readSafetensors,
  readSafetensorsHeader,
  writeSafetensors,
  type SafetensorsDtype,
  type TensorToWrite,
} from '../lib/io/safetensors.js';
import { HiermemError } from '../lib/errors.js';
import { mulberry32 } from './helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'hiermem-st-'));
after(() => rmSync(dir, { recursive: true, force: true }));
let counter = 0;
const fresh = (name = 'f') => join(dir, `${name}-${counter++}.safetensors`);


async function rejectsWith(p: Promise<unknown>, code: string, message?: RegExp | string): Promise<HiermemError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof HiermemError, `expected HiermemError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    if (typeof message === 'string') assert.ok(err.message.includes(message), `"${err.message}" lacks "${message}"`);
    else if (message) assert.match(err.message, message);
    return err;
  }
  assert.fail(`expected ${code}, but it resolved`);
}

/** Builds a file by hand: u64 header length (overridable), header text, data bytes. */
function craft(header: string | object, data: Uint8Array | number[] = [], lengthOverride?: bigint): string {
  const json = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(lengthOverride ?? BigInt(json.length));
  const path = fresh('crafted');
  writeFileSync(path, Buffer.concat([prefix, json, Buffer.from(data)]));
  return path;
}

async function expectCorrupt(path: string, message?: RegExp | string): Promise<void> {
  const err = await rejectsWith(readSafetensors(path), 'E_CHECKPOINT_CORRUPT', message);
  assert.ok(err.message.includes(path), `message should name the file: ${err.message}`);
  await rejectsWith(readSafetensorsHeader(path), 'E_CHECKPOINT_CORRUPT', message);
}

const entry = (dtype: string, shape: unknown, offsets: unknown) => ({ dtype, shape, data_offsets: offsets });

// ------------------------------------------------------------------------------------------------
// Round trips

function sampleTensors(): TensorToWrite[] {
  return [
    { name: 'f64', dtype: 'F64', shape: [2, 2], data: new Float64Array([1.5, -2.25, Math.PI, -0]) },
    { name: 'f32', dtype: 'F32', shape: [3], data: new Float32Array([1, -1e-30, Number.POSITIVE_INFINITY]) },
    { name: 'f16', dtype: 'F16', shape: [2], data: new Uint16Array([0x3c00, 0xc000]) },
    { name: 'bf16', dtype: 'BF16', shape: [1, 2], data: new Uint16Array([0x3f80, 0x7fc0]) },
    { name: 'i64', dtype: 'I64', shape: [3], data: new BigInt64Array([-(2n ** 63n), 0n, 2n ** 63n - 1n]) },
    { name: 'i32', dtype: 'I32', shape: [2, 1], data: new Int32Array([-2147483648, 2147483647]) },
    { name: 'i16', dtype: 'I16', shape: [2], data: new Int16Array([-32768, 32767]) },
    { name: 'i8', dtype: 'I8', shape: [2], data: new Int8Array([-128, 127]) },
    { name: 'u64', dtype: 'U64', shape: [1], data: new BigUint64Array([2n ** 64n - 1n]) },
    { name: 'u32', dtype: 'U32', shape: [1], data: new Uint32Array([4294967295]) },
    { name: 'u16', dtype: 'U16', shape: [1], data: new Uint16Array([65535]) },
    { name: 'u8', dtype: 'U8', shape: [5], data: new Uint8Array([0, 1, 2, 254, 255]) },
    { name: 'bool', dtype: 'BOOL', shape: [2], data: new Uint8Array([1, 0]) },
    { name: 'scalar', dtype: 'F32', shape: [], data: new Float32Array([42]) },
    { name: 'empty', dtype: 'F32', shape: [0], data: new Float32Array(0) },
    { name: 'empty2d', dtype: 'I64', shape: [4, 0], data: new BigInt64Array(0) },
  ];
}

const CLASS_OF: Record<SafetensorsDtype, string> = {
  F64: 'Float64Array',
  F32: 'Float32Array',
  F16: 'Uint16Array',
  BF16: 'Uint16Array',
  I64: 'BigInt64Array',
  I32: 'Int32Array',
  I16: 'Int16Array',
  I8: 'Int8Array',
  U64: 'BigUint64Array',
  U32: 'Uint32Array',
  U16: 'Uint16Array',
  U8: 'Uint8Array',
  BOOL: 'Uint8Array',
};

test('round trip of every dtype, a scalar and empty tensors', async () => {
  const path = fresh();
  const tensors = sampleTensors();
  await writeSafetensors(path, tensors);
  const { tensors: got, metadata } = await readSafetensors(path);
  assert.deepEqual(metadata, {});
  assert.deepEqual([...got.keys()], tensors.map((t) => t.name));
  for (const t of tensors) {
    const g = got.get(t.name);
    assert.ok(g, t.name);
    assert.equal(g.dtype, t.dtype);
    assert.deepEqual(g.shape, t.shape);
    assert.equal(g.data.constructor.name, CLASS_OF[t.dtype], t.name);
    assert.equal(g.data.byteOffset, 0); // its own, naturally aligned buffer
    assert.deepEqual(g.data, t.data, t.name);
  }
});

test('NaN payloads and -0 survive bit for bit', async () => {
  const path = fresh();
  const bits = new Uint32Array([0x7fc00001, 0xffc00000, 0x80000000]);
  await writeSafetensors(path, [{ name: 'x', dtype: 'F32', shape: [3], data: new Float32Array(bits.buffer) }]);
  const got = (await readSafetensors(path)).tensors.get('x');
  assert.ok(got);
  assert.deepEqual(new Uint32Array(got.data.buffer, got.data.byteOffset, 3), bits);
});

test('metadata round trip, unicode and integer-like names, zero tensors', async () => {
  const path = fresh();
  const metadata = { format: 'hiermem', 'ключ': 'значение 🧠', empty: '', config: '{"a":[1,2]}' };
  await writeSafetensors(
    path,
    [
      { name: '10', dtype: 'U8', shape: [1], data: new Uint8Array([10]) },
      { name: '2', dtype: 'U8', shape: [1], data: new Uint8Array([2]) },
      { name: 'emb.重み', dtype: 'U8', shape: [1], data: new Uint8Array([7]) },
    ],
    metadata,
  );
  const got = await readSafetensors(path);
  assert.deepEqual(got.metadata, metadata);
  // Map order follows the data section, i.e. the order they were written in.
  assert.deepEqual([...got.tensors.keys()], ['10', '2', 'emb.重み']);
  assert.deepEqual(got.tensors.get('emb.重み')?.data, new Uint8Array([7]));

  const none = fresh();
  await writeSafetensors(none, [], {});
  const back = await readSafetensors(none);
  assert.equal(back.tensors.size, 0);
  assert.deepEqual(back.metadata, {});
});

test('"__proto__" works as a tensor name and as a metadata key', async () => {
  const path = fresh();
  const metadata = JSON.parse('{"__proto__":"p","k":"v"}') as Record<string, string>;
  await writeSafetensors(
    path,
    [
      { name: '__proto__', dtype: 'U8', shape: [1], data: new Uint8Array([1]) },
      { name: 'constructor', dtype: 'U8', shape: [1], data: new Uint8Array([2]) },
    ],
    metadata,
  );
  const got = await readSafetensors(path);
  assert.deepEqual([...got.tensors.keys()], ['__proto__', 'constructor']);
  assert.deepEqual(Object.entries(got.metadata), [['__proto__', 'p'], ['k', 'v']]);
  assert.equal(Object.getPrototypeOf(got.metadata), Object.prototype);
});

test('raw little-endian bytes are accepted for any dtype', async () => {
  const path = fresh();
  const f = new Float32Array([1.25, -3]);
  await writeSafetensors(path, [
    { name: 'a', dtype: 'F32', shape: [2], data: new Uint8Array(f.buffer) },
    { name: 'b', dtype: 'F32', shape: [2], data: new DataView(f.buffer) },
    { name: 'c', dtype: 'F32', shape: [2], data: Buffer.from(f.buffer) },
  ]);
  const got = await readSafetensors(path);
  for (const k of ['a', 'b', 'c']) assert.deepEqual(got.tensors.get(k)?.data, f);
});

test('typed array views with an offset into a larger buffer are written from the view only', async () => {
  const path = fresh();
  const big = new Float32Array([9, 9, 1, 2, 3, 9]);
  await writeSafetensors(path, [{ name: 'v', dtype: 'F32', shape: [3], data: big.subarray(2, 5) }]);
  assert.deepEqual((await readSafetensors(path)).tensors.get('v')?.data, new Float32Array([1, 2, 3]));
});

test('exact byte layout of a tiny file', async () => {
  const path = fresh();
  await writeSafetensors(
    path,
    [
      { name: 'a', dtype: 'F32', shape: [2], data: new Float32Array([1, -2]) },
      { name: 'b', dtype: 'U8', shape: [3], data: new Uint8Array([1, 2, 3]) },
    ],
    { format: 'pt' },
  );
  // The JSON is 138 bytes; 8 + 138 = 146 rounds up to 152, so N = 144 with 6 spaces of padding.
  const json =
    '{"__metadata__":{"format":"pt"},' +
    '"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},' +
    '"b":{"dtype":"U8","shape":[3],"data_offsets":[8,11]}}';
  assert.equal(json.length, 138);
  const expected = Buffer.concat([
    Buffer.from([144, 0, 0, 0, 0, 0, 0, 0]),
    Buffer.from(json + '      ', 'ascii'),
    Buffer.from([0x00, 0x00, 0x80, 0x3f]), // 1.0f
    Buffer.from([0x00, 0x00, 0x00, 0xc0]), // -2.0f
    Buffer.from([1, 2, 3]),
  ]);
  assert.deepEqual(readFileSync(path), expected);

  const header = await readSafetensorsHeader(path);
  assert.equal(header.headerLength, 144);
  assert.equal(header.dataStart, 152);
  assert.deepEqual(header.metadata, { format: 'pt' });
  assert.deepEqual(header.tensors.get('a'), { dtype: 'F32', shape: [2], begin: 0, end: 8 });
  assert.deepEqual(header.tensors.get('b'), { dtype: 'U8', shape: [3], begin: 8, end: 11 });
});

test('the data section starts 8-byte aligned for every header length', async () => {
  for (let len = 1; len <= 9; len++) {
    const path = fresh();
    await writeSafetensors(path, [{ name: 'x'.repeat(len), dtype: 'U8', shape: [1], data: new Uint8Array([len]) }]);
    const h = await readSafetensorsHeader(path);
    assert.equal(h.dataStart % 8, 0);
    assert.equal((await readSafetensors(path)).tensors.get('x'.repeat(len))?.data[0], len);
  }
});

test('reads unpadded files written by other tools', async () => {
  const path = craft({ a: entry('U8', [2], [0, 2]) }, [5, 6]); // 45-byte header: data start unaligned
  assert.deepEqual((await readSafetensors(path)).tensors.get('a')?.data, new Uint8Array([5, 6]));
});

test('streams a multi-megabyte tensor', async () => {
  const path = fresh();
  const n = 3_000_001;
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = i * 0.5;
  await writeSafetensors(path, [
    { name: 'head', dtype: 'U8', shape: [3], data: new Uint8Array([1, 2, 3]) },
    { name: 'big', dtype: 'F32', shape: [n], data },
  ]);
  const got = (await readSafetensors(path)).tensors.get('big');
  assert.ok(got);
  assert.equal(got.data.length, n);
  assert.equal(got.data[n - 1], (n - 1) * 0.5);
  assert.deepEqual(got.data, data);
});

// ------------------------------------------------------------------------------------------------
// Reader options

test('expect: matching tensors pass, missing or different ones are E_CONFIG_INCOMPATIBLE', async () => {
  const path = fresh();
  await writeSafetensors(path, [
    { name: 'w', dtype: 'F32', shape: [2, 3], data: new Float32Array(6) },
    { name: 'b', dtype: 'F32', shape: [3], data: new Float32Array(3) },
  ]);
  const ok = await readSafetensors(path, { expect: { w: { dtype: 'F32', shape: [2, 3] }, b: {} } });
  assert.equal(ok.tensors.size, 2);
  await readSafetensors(path, { expect: new Map([['w', { shape: [2, 3] }]]) });
  await rejectsWith(readSafetensors(path, { expect: { missing: {} } }), 'E_CONFIG_INCOMPATIBLE', '"missing"');
  await rejectsWith(readSafetensors(path, { expect: { w: { shape: [3, 2] } } }), 'E_CONFIG_INCOMPATIBLE', '[3,2]');
  await rejectsWith(readSafetensors(path, { expect: { w: { shape: [2, 3, 1] } } }), 'E_CONFIG_INCOMPATIBLE');
  await rejectsWith(readSafetensors(path, { expect: { b: { dtype: 'F64' } } }), 'E_CONFIG_INCOMPATIBLE', 'F64');
});

test('names: loads only the listed tensors', async () => {
  const path = fresh();
  await writeSafetensors(path, [
    { name: 'a', dtype: 'U8', shape: [1], data: new Uint8Array([1]) },
    { name: 'b', dtype: 'U8', shape: [1], data: new Uint8Array([2]) },
  ]);
  const got = await readSafetensors(path, { names: ['b'] });
  assert.deepEqual([...got.tensors.keys()], ['b']);
  await rejectsWith(readSafetensors(path, { names: ['c'] }), 'E_CONFIG_INCOMPATIBLE', '"c"');
});

// ------------------------------------------------------------------------------------------------
// Writer validation and atomicity

test('writer rejects bad arguments and leaves nothing behind', async () => {
  const path = fresh();
  const cases: Array<[TensorToWrite[], string]> = [
    [[{ name: 'a', dtype: 'F32', shape: [2], data: new Float64Array(2) }], 'E_INVALID_ARGUMENT'],
    [[{ name: 'a', dtype: 'F32', shape: [2], data: new Float32Array(3) }], 'E_SHAPE_MISMATCH'],
    [[{ name: 'a', dtype: 'I64', shape: [1], data: new Int32Array(2) }], 'E_INVALID_ARGUMENT'],
    [[{ name: 'a', dtype: 'Q4' as SafetensorsDtype, shape: [1], data: new Uint8Array(1) }], 'E_INVALID_ARGUMENT'],
    [[{ name: 'a', dtype: 'U8', shape: [-1], data: new Uint8Array(1) }], 'E_INVALID_ARGUMENT'],
    [[{ name: 'a', dtype: 'U8', shape: [1.5], data: new Uint8Array(1) }], 'E_INVALID_ARGUMENT'],
    [[{ name: 'a', dtype: 'U8', shape: 'x' as unknown as number[], data: new Uint8Array(1) }], 'E_INVALID_ARGUMENT'],
    [[{ name: 'a', dtype: 'F64', shape: [2 ** 40, 2 ** 20], data: new Uint8Array(1) }], 'E_INVALID_ARGUMENT'],
    [[{ name: '__metadata__', dtype: 'U8', shape: [1], data: new Uint8Array(1) }], 'E_INVALID_ARGUMENT'],
    [[{ name: 7 as unknown as string, dtype: 'U8', shape: [1], data: new Uint8Array(1) }], 'E_INVALID_ARGUMENT'],
    [
      [
        { name: 'a', dtype: 'U8', shape: [1], data: new Uint8Array(1) },
        { name: 'a', dtype: 'U8', shape: [1], data: new Uint8Array(1) },
      ],
      'E_INVALID_ARGUMENT',
    ],
    [[{ name: 'a', dtype: 'U8', shape: [1], data: [1] as unknown as Uint8Array }], 'E_INVALID_ARGUMENT'],
  ];
  for (const [tensors, code] of cases) await rejectsWith(writeSafetensors(path, tensors), code);
  await rejectsWith(
    writeSafetensors(path, [], { n: 1 } as unknown as Record<string, string>),
    'E_INVALID_ARGUMENT',
    '"n"',
  );
  assert.ok(!existsSync(path));
  assert.deepEqual(
    readdirSync(dir).filter((f) => f.includes('.tmp-')),
    [],
  );
});

test('a failure after the temp file was created leaves the previous file intact and no temp behind', async () => {
  const sub = join(dir, 'atomic');
  mkdirSync(sub);
  const path = join(sub, 'model.safetensors');
  await writeSafetensors(path, [{ name: 'old', dtype: 'U8', shape: [2], data: new Uint8Array([4, 2]) }], { v: 'old' });
  const before = readFileSync(path);

  // The second tensor's data does not match its shape; data is only checked when its turn comes,
  // i.e. after the header and the first tensor were already written to the temp file.
  await rejectsWith(
    writeSafetensors(path, [
      { name: 'first', dtype: 'F32', shape: [1024], data: new Float32Array(1024) },
      { name: 'bad', dtype: 'F32', shape: [4], data: new Float32Array(5) },
    ]),
    'E_SHAPE_MISMATCH',
    '"bad"',
  );
  assert.deepEqual(readFileSync(path), before);
  assert.deepEqual(readdirSync(sub), ['model.safetensors']);

  // A data getter that throws: surfaced as E_IO naming the path.
  const throwing = {
    name: 'lazy',
    dtype: 'U8' as const,
    shape: [1],
    get data(): ArrayBufferView {
      throw new Error('producer failed');
    },
  };
  const err = await rejectsWith(
    writeSafetensors(path, [{ name: 'ok', dtype: 'U8', shape: [1], data: new Uint8Array(1) }, throwing]),
    'E_IO',
    'producer failed',
  );
  assert.ok(err.message.includes(path));
  assert.deepEqual(readFileSync(path), before);
  assert.deepEqual(readdirSync(sub), ['model.safetensors']);
  assert.deepEqual((await readSafetensors(path)).metadata, { v: 'old' });
});

test('a successful write replaces the previous file', async () => {
  const path = fresh();
  await writeSafetensors(path, [{ name: 'a', dtype: 'U8', shape: [1], data: new Uint8Array([1]) }]);
  await writeSafetensors(path, [{ name: 'b', dtype: 'U8', shape: [1], data: new Uint8Array([2]) }]);
  const got = await readSafetensors(path);
  assert.deepEqual([...got.tensors.keys()], ['b']);
});

test('an unwritable path is E_IO naming the path and the OS error', async () => {
  const file = fresh('plain');
  writeFileSync(file, 'not a directory');
  const path = join(file, 'model.safetensors');
  const err = await rejectsWith(
    writeSafetensors(path, [{ name: 'a', dtype: 'U8', shape: [1], data: new Uint8Array(1) }]),
    'E_IO',
    path,
  );
  assert.match(err.message, /ENOTDIR/);
  await rejectsWith(writeSafetensors(join(dir, 'no', 'such', 'dir', 'x.safetensors'), []), 'E_IO', /ENOENT/);
});

// ------------------------------------------------------------------------------------------------
// Hostile input

test('missing file, directory and empty path', async () => {
  await rejectsWith(readSafetensors(join(dir, 'nope.safetensors')), 'E_IO', /ENOENT/);
  await rejectsWith(readSafetensorsHeader(join(dir, 'nope.safetensors')), 'E_IO', 'nope.safetensors');
  await rejectsWith(readSafetensors(dir), 'E_IO', dir);
  await rejectsWith(readSafetensors(''), 'E_INVALID_ARGUMENT');
});

test('corrupt: too short for the length field', async () => {
  for (const n of [0, 1, 7]) {
    const path = fresh();
    writeFileSync(path, Buffer.alloc(n));
    await expectCorrupt(path, 'shorter than the 8-byte');
  }
});

test('corrupt: header length too large', async () => {
  await expectCorrupt(craft('{}', [], 100_000_001n), 'limit');
  await expectCorrupt(craft('{}', [], 2n ** 64n - 1n), 'limit');
  await expectCorrupt(craft('{}', [], 3n), 'exceeds the 2 bytes');
  const path = fresh();
  writeFileSync(path, Buffer.from([0, 0, 0, 0, 0, 0, 0, 0])); // N = 0: empty JSON
  await expectCorrupt(path, 'not valid JSON');
});

test('corrupt: header not JSON, not UTF-8, or not an object', async () => {
  await expectCorrupt(craft('{"a":'), 'not valid JSON');
  await expectCorrupt(craft('{} x'), 'not valid JSON');
  await expectCorrupt(craft('{}\0'), 'not valid JSON');
  for (const h of ['[]', 'null', '"str"', '1', 'true']) await expectCorrupt(craft(h), 'not a JSON object');
  const bad = Buffer.from('{"\xff":1}', 'latin1');
  const path = fresh();
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(bad.length));
  writeFileSync(path, Buffer.concat([prefix, bad]));
  await expectCorrupt(path, 'UTF-8');
});

test('corrupt: malformed tensor entries', async () => {
  const d4 = [0, 0, 0, 0];
  const cases: Array<[object, string]> = [
    [{ a: 1 }, 'not an object'],
    [{ a: [] }, 'not an object'],
    [{ a: null }, 'not an object'],
    [{ a: { shape: [4], data_offsets: [0, 4] } }, 'dtype'],
    [{ a: entry(5 as unknown as string, [4], [0, 4]) }, 'dtype'],
    [{ a: entry('F8_E4M3', [4], [0, 4]) }, 'unsupported dtype "F8_E4M3"'],
    [{ a: entry('f32', [1], [0, 4]) }, 'unsupported dtype'],
    [{ a: { dtype: 'U8', data_offsets: [0, 4] } }, 'shape'],
    [{ a: entry('U8', 4, [0, 4]) }, 'shape'],
    [{ a: entry('U8', [-4], [0, 4]) }, 'dimension'],
    [{ a: entry('U8', [2.5], [0, 4]) }, 'dimension'],
    [{ a: entry('U8', ['4'], [0, 4]) }, 'dimension'],
    [{ a: entry('U8', [null], [0, 4]) }, 'dimension'],
    [{ a: entry('U8', [1e300], [0, 4]) }, 'dimension'],
    [{ a: { dtype: 'U8', shape: [4] } }, 'data_offsets'],
    [{ a: entry('U8', [4], [0, 4, 4]) }, 'data_offsets'],
    [{ a: entry('U8', [4], [4]) }, 'data_offsets'],
    [{ a: entry('U8', [4], { 0: 0, 1: 4 }) }, 'data_offsets'],
    [{ a: entry('U8', [4], ['0', '4']) }, 'safe integers'],
    [{ a: entry('U8', [4], [0, 4.5]) }, 'safe integers'],
    [{ a: entry('U8', [4], [0, 1e20]) }, 'safe integers'],
  ];
  for (const [header, msg] of cases) await expectCorrupt(craft(header, d4), msg);
});

test('corrupt: shape does not match the byte range, including overflow', async () => {
  await expectCorrupt(craft({ a: entry('F32', [3], [0, 8]) }, new Uint8Array(8)), 'needs 12 bytes');
  await expectCorrupt(craft({ a: entry('F32', [], [0, 8]) }, new Uint8Array(8)), 'needs 4 bytes');
  // 2^52 * 2^52 * 4 bytes overflows any safe integer; each dim alone is safe.
  await expectCorrupt(craft({ a: entry('F32', [2 ** 52, 2 ** 52], [0, 8]) }, new Uint8Array(8)), 'too many');
  await expectCorrupt(
    craft({ a: entry('F64', [Number.MAX_SAFE_INTEGER], [0, 8]) }, new Uint8Array(8)),
    'too many',
  );
  // Millions of huge dims must be rejected quickly, not by growing an enormous BigInt.
  const manyDims = Array.from({ length: 200_000 }, () => Number.MAX_SAFE_INTEGER);
  const started = Date.now();
  await expectCorrupt(craft({ a: entry('U8', manyDims, [0, 8]) }, new Uint8Array(8)), 'too many');
  assert.ok(Date.now() - started < 5000);
  // A zero dimension makes a huge shape empty, which is valid.
  const ok = craft({ a: entry('F64', [0, Number.MAX_SAFE_INTEGER], [0, 0]) });
  assert.deepEqual((await readSafetensors(ok)).tensors.get('a')?.shape, [0, Number.MAX_SAFE_INTEGER]);
});

test('corrupt: offsets outside the data section', async () => {
  const d8 = new Uint8Array(8);
  await expectCorrupt(craft({ a: entry('U8', [4], [6, 10]) }, d8), 'outside the data section of 8 bytes');
  await expectCorrupt(craft({ a: entry('U8', [4], [-4, 0]) }, d8), 'outside');
  await expectCorrupt(craft({ a: entry('U8', [0], [5, 4]) }, d8), 'outside');
  await expectCorrupt(craft({ a: entry('U8', [8], [0, 8]) }, new Uint8Array(7)), 'outside');
});

test('corrupt: overlapping tensors, holes and trailing bytes', async () => {
  const d12 = new Uint8Array(12);
  await expectCorrupt(
    craft({ a: entry('F32', [2], [0, 8]), b: entry('F32', [2], [4, 12]) }, d12),
    'overlaps',
  );
  await expectCorrupt(craft({ a: entry('F32', [2], [0, 8]), b: entry('F32', [2], [0, 8]) }, new Uint8Array(8)), 'overlaps');
  // An empty tensor placed inside another tensor's range.
  await expectCorrupt(craft({ a: entry('U8', [8], [0, 8]), e: entry('U8', [0], [3, 3]) }, new Uint8Array(8)), 'overlaps');
  await expectCorrupt(craft({ a: entry('F32', [1], [0, 4]), b: entry('F32', [1], [8, 12]) }, d12), 'hole');
  await expectCorrupt(craft({ a: entry('F32', [1], [4, 8]) }, new Uint8Array(8)), 'hole');
  await expectCorrupt(craft({ a: entry('F32', [1], [0, 4]) }, new Uint8Array(8)), 'cover 4 bytes');
  await expectCorrupt(craft({}, [1]), 'cover 0 bytes');
  // Empty tensors at the boundaries are fine.
  const ok = craft({ z: entry('U8', [0], [0, 0]), a: entry('U8', [2], [0, 2]), y: entry('U8', [0], [2, 2]) }, [1, 2]);
  assert.deepEqual([...(await readSafetensors(ok)).tensors.keys()], ['z', 'a', 'y']);
});

test('corrupt: duplicate keys anywhere in the header', async () => {
  const t = '{"dtype":"U8","shape":[1],"data_offsets":[0,1]}';
  await expectCorrupt(craft(`{"a":${t},"a":${t}}`, [1]), 'repeats the key "a"');
  await expectCorrupt(craft(`{"a":${t},"\\u0061":${t}}`, [1]), 'repeats the key "a"');
  await expectCorrupt(craft(`{"a":{"dtype":"U8","dtype":"U8","shape":[1],"data_offsets":[0,1]}}`, [1]), '"dtype"');
  await expectCorrupt(craft(`{"__metadata__":{},"__metadata__":{},"a":${t}}`, [1]), '__metadata__');
  await expectCorrupt(craft(`{"__metadata__":{"k":"1","k":"2"},"a":${t}}`, [1]), '"k"');
  // The same key in different objects, and key-like strings in values/arrays, are not duplicates.
  const ok = craft(`{"__metadata__":{"a":"a","x":"{\\"a\\":1,\\"a\\":2}"},"a":${t}}`, [1]);
  assert.deepEqual((await readSafetensors(ok)).metadata, { a: 'a', x: '{"a":1,"a":2}' });
});

test('corrupt: __metadata__ must be an object of strings', async () => {
  const a = { a: entry('U8', [1], [0, 1]) };
  for (const md of [1, 'x', null, [], ['a']]) await expectCorrupt(craft({ __metadata__: md, ...a }, [1]), '__metadata__');
  for (const v of [1, null, {}, [], true]) {
    await expectCorrupt(craft({ __metadata__: { k: v }, ...a }, [1]), '__metadata__ value for "k"');
  }
});

test('truncating a valid file at every length is E_CHECKPOINT_CORRUPT', async () => {
  const path = fresh();
  await writeSafetensors(
    path,
    [
      { name: 'w', dtype: 'F32', shape: [2, 3], data: new Float32Array([1, 2, 3, 4, 5, 6]) },
      { name: 'i', dtype: 'I64', shape: [2], data: new BigInt64Array([1n, -1n]) },
      { name: 'b', dtype: 'U8', shape: [3], data: new Uint8Array([7, 8, 9]) },
      { name: 'e', dtype: 'F32', shape: [0], data: new Float32Array(0) },
    ],
    { note: 'truncate me' },
  );
  const full = readFileSync(path);
  const cut = fresh('cut');
  for (let len = 0; len < full.length; len++) {
    writeFileSync(cut, full.subarray(0, len));
    await rejectsWith(readSafetensors(cut), 'E_CHECKPOINT_CORRUPT');
    await rejectsWith(readSafetensorsHeader(cut), 'E_CHECKPOINT_CORRUPT');
  }
  writeFileSync(cut, full);
  assert.equal((await readSafetensors(cut)).tensors.size, 4);
});

test('random single-byte flips in the length and header either load or throw E_CHECKPOINT_CORRUPT', async () => {
  const path = fresh();
  await writeSafetensors(
    path,
    [
      { name: 'embed', dtype: 'F32', shape: [4, 2], data: new Float32Array(8).fill(0.5) },
      { name: 'ids', dtype: 'I32', shape: [3], data: new Int32Array([1, 2, 3]) },
      { name: 'mask', dtype: 'U8', shape: [2], data: new Uint8Array([1, 0]) },
    ],
    { step: '12' },
  );
  const full = readFileSync(path);
  const dataStart = (await readSafetensorsHeader(path)).dataStart;
  const rand = mulberry32(20250101);
  const flipped = fresh('flip');
  let loaded = 0;
  let rejected = 0;
  for (let trial = 0; trial < 400; trial++) {
    const bytes = Buffer.from(full);
    const pos = Math.floor(rand() * dataStart);
    let value = Math.floor(rand() * 256);
    if (value === bytes[pos]) value ^= 0xff;
    bytes[pos] = value;
    writeFileSync(flipped, bytes);
    try {
      const got = await readSafetensors(flipped);
      assert.ok(got.tensors instanceof Map);
      loaded++;
    } catch (err) {
      assert.ok(err instanceof HiermemError, `trial ${trial}: ${String(err)}`);
      assert.equal(err.code, 'E_CHECKPOINT_CORRUPT', `trial ${trial}: ${err.message}`);
      rejected++;
    }
  }
  assert.equal(loaded + rejected, 400);
  assert.ok(rejected > 0);
});
