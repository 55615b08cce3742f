// The benchmark suite cannot rot: `npm run bench -- --quick --only=gather` runs inside npm test and
// its latest.json must carry the issue #5 contract (field names relied on outside our tests).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const run = promisify(execFile);
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

test('npm run bench -- --quick --only=gather writes the latest.json contract and prints the table', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'hiermem-bench-smoke-'));
  try {
    const out = path.join(dir, 'latest.json');
    const { stdout } = await run('npm', ['run', '--silent', 'bench', '--', '--quick', '--only=gather', `--out=${out}`], { cwd: ROOT, timeout: 120_000 });
    assert.match(stdout, /\| memory-gather \| GB\/s \|/);
    const r = JSON.parse(await readFile(out, 'utf8'));
    assert.equal(typeof r.machine, 'string');
    assert.ok(!Number.isNaN(Date.parse(r.date)));
    assert.ok('commit' in r);
    assert.ok(r.limits.sgemmGflops > 0 && r.limits.memcpyGBs > 0 && r.limits.fmaPeakGflops > 0, JSON.stringify(r.limits));
    // the gather rows (issue #12): the contract row, then cold and warm against memcpy in the same cache state
    assert.deepEqual(r.rows.map((x: { name: string }) => x.name), ['memory-gather', 'memory-gather-cold', 'memory-gather-warm']);
    const row = r.rows[0];
    for (const key of ['name', 'unit', 'ours', 'peer', 'peerValue', 'ratio', 'target', 'met']) assert.ok(key in row, `row lacks ${key}`);
    assert.equal(row.name, 'memory-gather');
    assert.equal(row.unit, 'GB/s');
    assert.equal(row.peer, null);
    assert.ok(row.ours > 0);
    // a peerless row carries its fraction of the limit measured in the same run
    assert.ok(Math.abs(row.fractionOfLimit - row.ours / r.limits.memcpyGBs) < 1e-9);
    assert.equal(row.met, row.fractionOfLimit >= row.target);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('bench rejects unknown sections and options with a message', async () => {
  await assert.rejects(run(process.execPath, [path.join(ROOT, 'dist/bench/run.js'), '--only=nope']), (e: { stderr: string; code: number }) => {
    assert.equal(e.code, 1);
    assert.match(e.stderr, /unknown section nope/);
    return true;
  });
});
