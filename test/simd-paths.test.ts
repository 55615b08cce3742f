/**
 * The kernel tests once per SIMD level below the machine's own. The addon picks its GEMM
 * micro-kernel and vector loops once per process from the CPU's features; on an AVX-512 machine
 * (CI's) the AVX2 and portable paths would otherwise never run. Each lower level reruns the GEMM,
 * kernel and memory-kernel tests in a child process with HIERMEM_SIMD forcing it.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadNative } from '../lib/native.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const FILES = ['gemm.test.js', 'kernels.test.js', 'memory-kernels.test.js'].map((f) => path.join(here, f));
const LEVELS = ['avx512', 'avx2', 'generic'] as const;

const own = loadNative().gemmKernel;

/** The child's environment: the level forced, and not marked as a child of this test runner
 * (NODE_TEST_CONTEXT would make its `node --test` report to us instead of running standalone). */
function childEnv(level: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, HIERMEM_SIMD: level };
  delete env.NODE_TEST_CONTEXT;
  return env;
}
const lower = LEVELS.slice(LEVELS.indexOf(own as (typeof LEVELS)[number]) + 1);

describe('kernel tests at each lower SIMD level', () => {
  test(`the machine's level is known (${own})`, () => {
    assert.ok(LEVELS.includes(own as (typeof LEVELS)[number]), `unknown level ${own}`);
  });
  for (const level of ['avx2', 'generic'] as const) {
    const skip = lower.includes(level) ? false : `this CPU's own level is ${own}: the main run already covers ${level}`;
    test(`HIERMEM_SIMD=${level}`, { skip }, () => {
      const r = spawnSync(process.execPath, ['--test', '--test-concurrency=1', '--test-reporter=tap', ...FILES], {
        env: childEnv(level),
        encoding: 'utf8',
        timeout: 10 * 60_000,
      });
      const out = `${r.stdout}\n${r.stderr}`;
      assert.equal(r.status, 0, `kernel tests at HIERMEM_SIMD=${level} failed:\n${out.slice(-6000)}`);
      // it ran the suites (a child that found no test also exits 0)
      const passed = Number(/^# pass (\d+)$/m.exec(out)?.[1] ?? 0);
      assert.ok(passed >= 50, `HIERMEM_SIMD=${level}: only ${passed} tests passed:\n${out.slice(-3000)}`);
      // the child really ran at that level (the GEMM suite names its kernel)
      const probe = spawnSync(process.execPath, ['-e', "import('./native.js').then((m) => process.stdout.write(m.loadNative().gemmKernel))"], {
        cwd: path.join(here, '..', 'lib'),
        env: childEnv(level),
        encoding: 'utf8',
      });
      assert.equal(probe.stdout, level, `HIERMEM_SIMD=${level} gave kernel ${probe.stdout} ${probe.stderr}`);
    });
  }
});
