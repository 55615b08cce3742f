/**
 * Checks shared by the MPI tests (one machine, test/dist-mpi.test.ts; two namespaces,
 * test/dist-netns.test.ts) on what test/dist-mpi-worker.ts writes: rank-<r>.json and rank-<r>.f32;
 * and the mpirun launcher the one-machine tests (dist-mpi, dist-shard, dist-nccl) share.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';

/** Why the MPI tests cannot run here, or null (Open MPI's mpirun is on PATH); `needsOpenMpi` says why another mpirun will not do. */
export function mpiMissing(needsOpenMpi = 'these tests pass its flags'): string | null {
  const r = spawnSync('mpirun', ['--version'], { encoding: 'utf8' });
  if (r.error || r.status !== 0) return 'mpirun not found (apt-get install openmpi-bin)';
  if (!/Open MPI|OpenRTE/i.test(r.stdout + r.stderr)) return `mpirun is not Open MPI's (${needsOpenMpi})`;
  return null;
}

/** The environment of launched ranks: no single-copy shared memory (refused in containers), one thread each. */
export const MPI_ENV = { ...process.env, OMPI_MCA_btl_vader_single_copy_mechanism: 'none', HIERMEM_THREADS: '1' };

export interface Done { code: number | null; signal: string | null; stderr: string; ms: number }

/** Runs `node args` on np ranks (np 0: one plain process, no mpirun), its process group killed after timeoutMs. */
export function launch(np: number, args: string[], timeoutMs: number, env: NodeJS.ProcessEnv = MPI_ENV): Promise<Done> {
  const root = typeof process.getuid === 'function' && process.getuid() === 0 ? ['--allow-run-as-root'] : [];
  const [cmd, argv] = np === 0 ? [process.execPath, args] : ['mpirun', ['-np', String(np), '--oversubscribe', ...root, process.execPath, ...args]];
  return new Promise((resolve) => {
    const t0 = Date.now();
    const child = spawn(cmd, argv, { env, stdio: ['ignore', 'ignore', 'pipe'], detached: true });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
    const timer = setTimeout(() => { try { process.kill(-child.pid!, 'SIGKILL'); } catch { /* gone */ } }, timeoutMs);
    child.on('close', (code, signal) => { clearTimeout(timer); resolve({ code, signal, stderr, ms: Date.now() - t0 }); });
  });
}

export async function rankJson<T>(dir: string, rank: number): Promise<T> {
  return JSON.parse(await readFile(path.join(dir, `rank-${rank}.json`), 'utf8')) as T;
}

/**
 * `one` holds a 1-rank run of batch 2b, `two` a 2-rank run of batch b each (the worker's 'slice'
 * mode), both `steps` steps: the ranks agree bit for bit, and the 2-rank run matches the 1-rank one
 * within fp32 tolerance (losses 1e-5, parameters 1e-4).
 */
export async function assertSliceRunsMatch(one: string, two: string, steps: number): Promise<void> {
  const a = await rankJson<{ losses: number[]; params: string }>(one, 0);
  const b0 = await rankJson<{ losses: number[]; params: string }>(two, 0);
  const b1 = await rankJson<{ losses: number[]; params: string }>(two, 1);
  assert.equal(b0.params, b1.params, 'ranks hold bit-identical parameters');
  assert.deepEqual(b0.losses, b1.losses, 'ranks report the same loss');
  assert.equal(a.losses.length, steps);
  for (let i = 0; i < steps; i++) assert.ok(Math.abs(a.losses[i]! - b0.losses[i]!) < 1e-5, `loss ${i}: ${a.losses[i]} vs ${b0.losses[i]}`);
  const pa = new Float32Array((await readFile(path.join(one, 'rank-0.f32'))).buffer.slice(0));
  const pb = new Float32Array((await readFile(path.join(two, 'rank-0.f32'))).buffer.slice(0));
  assert.equal(pa.length, pb.length);
  let maxDiff = 0;
  for (let i = 0; i < pa.length; i++) maxDiff = Math.max(maxDiff, Math.abs(pa[i]! - pb[i]!));
  assert.ok(maxDiff < 1e-4, `max parameter difference ${maxDiff}`);
}
