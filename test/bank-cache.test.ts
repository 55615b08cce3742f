// releasePageCache / residentBytes: a file bank's pages can be dropped from the page cache (the
// benchmark's cold fetches, and what a bank larger than RAM does) without changing what it holds.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { MemoryBank } from '../lib/memory/bank.js';
import { resolveMemorySpec } from '../lib/memory/spec.js';

test('a file bank drops its pages from the page cache and reads the same values back', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'hiermem-cache-'));
  try {
    const spec = resolveMemorySpec({ k: 4, levels: [16, 8] }, { nLayers: 2, dModel: 64 });
    const bank = await MemoryBank.createFile(path.join(dir, 'b.safetensors'), spec, 64, { seed: 2 });
    const paths = Int32Array.from([1, 6, 3, 13]);
    const first = bank.gather(paths);
    assert.ok(bank.residentBytes() >= first.length * 4, 'fetched blocks are resident');
    bank.releasePageCache();
    const after = bank.residentBytes();
    assert.ok(after < first.length * 4, `resident after release: ${after} bytes`);
    assert.deepEqual(bank.gather(paths), first);
    bank.close();
    const ram = MemoryBank.createInMemory(spec, 64, { seed: 2 });
    ram.releasePageCache(); // no-op in RAM
    assert.equal(ram.residentBytes(), ram.bytes);
    assert.deepEqual(ram.gather(paths), first);
    ram.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
