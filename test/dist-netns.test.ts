/**
 * Data-parallel training over MPI between two "machines" (issue #14): two network namespaces
 * joined by a veth pair, one rank in each, Open MPI over TCP restricted to that link. The same
 * equality checks as the 2-rank local test (test/dist-mpi.test.ts), run by the same worker
 * (test/dist-mpi-worker.ts; a sharded memory run by test/dist-shard-worker.ts): collectives against the rank-order JS reference, bit-identical on both
 * ranks; 2 ranks x batch 2 equal 1 rank x batch 4; the anchor bit-identical across ranks.
 *
 * mpirun runs inside the first namespace and starts the remote rank through an rsh agent that maps
 * a host address to its namespace (`ip netns exec`), as ssh would reach another machine. The only
 * addresses are 10.213.77.1 and .2 on the veth ends (plus each namespace's own loopback), so no
 * traffic leaves the pair. Namespaces are deleted afterwards, also on failure (and, if a previous
 * run was killed hard, at the next start). Skips, saying why, only where namespaces cannot be made
 * (not root, no `ip`, unshare refused) or Open MPI's mpirun is missing.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { orderedSum } from '../lib/dist/communicator.js';
import { rankData, sha } from './dist-mpi-worker.js';
import { assertSliceRunsMatch, rankJson } from './dist-checks.js';
import { SHARD_DOCS } from './dist-shard-worker.js';
import { RetrievalTree } from '../lib/retrieval/tree.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const WORKER = path.join(HERE, 'dist-mpi-worker.js');
const SHARD_WORKER = path.join(HERE, 'dist-shard-worker.js');

const NET = '10.213.77.0/24'; // private, used by nothing else here; lives only inside the two namespaces
const ADDR = ['10.213.77.1', '10.213.77.2'] as const;
const PREFIX = 'hm-netns-';
// Per-process names, so a concurrent run (another checkout's CI) never touches ours.
const NS = [`${PREFIX}${process.pid}-a`, `${PREFIX}${process.pid}-b`] as const;
const RUN_MS = 30_000; // one mpirun job; the whole test stays well under this

interface Sh { ok: boolean; out: string }

/** `ip args` with a bound on its time (a stuck `ip` must not hang the suite). */
function ip(...args: string[]): Sh {
  const r = spawnSync('ip', args, { encoding: 'utf8', timeout: 10_000 });
  return { ok: !r.error && r.status === 0, out: `${r.error?.message ?? ''}${r.stdout ?? ''}${r.stderr ?? ''}`.trim() };
}

/** Why this test cannot make namespaces or run Open MPI here, or null. */
function cannotRun(): string | null {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return 'network namespaces need root (ip netns add); not root here';
  const v = spawnSync('ip', ['-V'], { encoding: 'utf8', timeout: 10_000 });
  if (v.error) return 'no `ip` command (apt-get install iproute2): cannot make network namespaces';
  const m = spawnSync('mpirun', ['--version'], { encoding: 'utf8', timeout: 10_000 });
  if (m.error || m.status !== 0) return 'mpirun not found (apt-get install openmpi-bin)';
  if (!/Open MPI|OpenRTE/i.test(m.stdout + m.stderr)) return 'mpirun is not Open MPI\'s (this test passes its flags)';
  return null;
}

function pidAlive(pid: number): boolean {
  try { process.kill(pid, 0); return true; } catch (e) { return (e as NodeJS.ErrnoException).code === 'EPERM'; }
}

/** SIGKILLs what still runs in a namespace (a rank or orted left by a failed job), then deletes it. */
function dropNamespace(ns: string): void {
  const pids = ip('netns', 'pids', ns);
  if (pids.ok) for (const p of pids.out.split(/\s+/).filter(Boolean)) { try { process.kill(Number(p), 'SIGKILL'); } catch { /* gone */ } }
  ip('netns', 'del', ns); // takes its veth end with it, and so the pair
}

/** Our namespaces (this run's, and those of earlier runs of this test whose process is gone). */
function listOurs(): string[] {
  const l = ip('netns', 'list');
  if (!l.ok) return [];
  return l.out.split('\n').map((s) => s.split(/\s/)[0]!).filter((n) => n.startsWith(PREFIX));
}

function cleanup(): void {
  for (const ns of listOurs()) {
    const owner = Number(/^hm-netns-(\d+)-/.exec(ns)?.[1]);
    if (owner === process.pid || !pidAlive(owner)) dropNamespace(ns);
  }
}

/**
 * Makes the two "hosts". Returns null, or why namespaces cannot be made (the only skip), or throws
 * when namespaces exist but the link cannot be set up (a failure, not a skip).
 */
function makeHosts(): string | null {
  cleanup();
  const a = ip('netns', 'add', NS[0]);
  if (!a.ok) return `cannot make a network namespace here (ip netns add: ${a.out || 'failed'}; unshare refused?)`;
  const b = ip('netns', 'add', NS[1]);
  if (!b.ok) return `cannot make a network namespace here (ip netns add: ${b.out || 'failed'}; unshare refused?)`;
  // The pair is made inside the namespaces: no interface appears in the host's, even for a moment.
  const steps: string[][] = [
    ['-n', NS[0], 'link', 'add', 'veth0', 'type', 'veth', 'peer', 'name', 'veth1', 'netns', NS[1]],
    ['-n', NS[0], 'addr', 'add', `${ADDR[0]}/24`, 'dev', 'veth0'],
    ['-n', NS[1], 'addr', 'add', `${ADDR[1]}/24`, 'dev', 'veth1'],
    ['-n', NS[0], 'link', 'set', 'lo', 'up'], // Open MPI talks to its own daemon over loopback
    ['-n', NS[1], 'link', 'set', 'lo', 'up'],
    ['-n', NS[0], 'link', 'set', 'veth0', 'up'],
    ['-n', NS[1], 'link', 'set', 'veth1', 'up'],
  ];
  for (const s of steps) {
    const r = ip(...s);
    if (!r.ok) throw new Error(`ip ${s.join(' ')}: ${r.out}`);
  }
  return null;
}

// A hard stop of this process (process.exit, an uncaught error) still removes the namespaces.
process.once('exit', cleanup);

interface Done { code: number | null; signal: string | null; stderr: string; ms: number }

/** The rsh agent Open MPI starts the remote daemon with: host address -> its namespace, like ssh. */
function agentScript(): string {
  return ['#!/bin/sh', 'host=$1; shift', 'case "$host" in',
    `  ${ADDR[0]}) ns=${NS[0]} ;;`, `  ${ADDR[1]}) ns=${NS[1]} ;;`,
    '  *) echo "netns agent: unknown host $host" >&2; exit 1 ;;', 'esac',
    'exec ip netns exec "$ns" /bin/sh -c "$*"', ''].join('\n');
}

/** `mpirun` in the first namespace, one rank per namespace over TCP; SIGKILLed after RUN_MS. */
function launchPair(work: string, args: string[]): Promise<Done> {
  const argv = ['netns', 'exec', NS[0], 'mpirun', '--allow-run-as-root', '-np', '2', '--hostfile', path.join(work, 'hosts'),
    '--mca', 'plm_rsh_agent', path.join(work, 'agent'), '--mca', 'btl', 'tcp,self',
    '--mca', 'btl_tcp_if_include', NET, '--mca', 'oob_tcp_if_include', NET, ...args];
  // The agent inherits mpirun's environment, so the remote rank gets these too; a stuck collective aborts.
  const env = { ...process.env, HIERMEM_THREADS: '1', HIERMEM_DIST_TIMEOUT_S: '20' };
  return new Promise((resolve) => {
    const t0 = Date.now();
    const child = spawn('ip', argv, { env, stdio: ['ignore', 'ignore', 'pipe'], detached: true });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
    const timer = setTimeout(() => {
      try { process.kill(-child.pid!, 'SIGKILL'); } catch { /* gone */ }
      for (const ns of NS) { // the remote daemon may have left mpirun's process group
        const p = ip('netns', 'pids', ns);
        if (p.ok) for (const id of p.out.split(/\s+/).filter(Boolean)) { try { process.kill(Number(id), 'SIGKILL'); } catch { /* gone */ } }
      }
    }, RUN_MS);
    child.on('close', (code, signal) => { clearTimeout(timer); resolve({ code, signal, stderr, ms: Date.now() - t0 }); });
  });
}

/** One plain process (the 1-rank reference), in the host namespace, bounded like the pair. */
function launchOne(args: string[]): Promise<Done> {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const child = spawn(process.execPath, args, { env: { ...process.env, HIERMEM_THREADS: '1' }, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
    const timer = setTimeout(() => child.kill('SIGKILL'), RUN_MS);
    child.on('close', (code, signal) => { clearTimeout(timer); resolve({ code, signal, stderr, ms: Date.now() - t0 }); });
  });
}

/** The network namespace's inode (what /proc/<pid>/ns/net links to) of one of ours. */
function nsInode(ns: string): string {
  return String(statSync(path.join('/run/netns', ns)).ino);
}

const SKIP = cannotRun();

test('two machines: one MPI rank in each of two network namespaces over TCP; the same equality checks', { skip: SKIP ?? false, timeout: 120_000 }, async (t) => {
  const work = await mkdtemp(path.join(tmpdir(), 'hm-netns-'));
  try {
    const why = makeHosts();
    if (why !== null) { t.skip(why); return; }
    await writeFile(path.join(work, 'hosts'), `${ADDR[0]} slots=1\n${ADDR[1]} slots=1\n`);
    await writeFile(path.join(work, 'agent'), agentScript());
    await chmod(path.join(work, 'agent'), 0o755);

    await t.test('collectives equal the rank-order JS reference bit for bit, one rank per namespace', async () => {
      const dir = path.join(work, 'coll');
      await mkdir(dir);
      // A shell in front of the worker records which network namespace each rank runs in.
      const rec = 'readlink /proc/self/ns/net > "$0/ns-$OMPI_COMM_WORLD_RANK" && exec "$@"';
      const r = await launchPair(work, ['/bin/sh', '-c', rec, dir, process.execPath, WORKER, 'collectives', dir]);
      assert.equal(r.code, 0, `mpirun failed after ${r.ms} ms (signal ${r.signal}):\n${r.stderr}`);
      for (const rank of [0, 1]) {
        const seen = (await readFile(path.join(dir, `ns-${rank}`), 'utf8')).trim();
        assert.equal(seen, `net:[${nsInode(NS[rank]!)}]`, `rank ${rank} runs in namespace ${NS[rank]}`);
      }
      const [r0, r1] = [await rankJson<Record<string, unknown>>(dir, 0), await rankJson<Record<string, unknown>>(dir, 1)];
      assert.deepEqual(r0, r1);
      for (const n of [1, 7, 1001, 65537]) {
        const sum = orderedSum([rankData(0, n), rankData(1, n)]);
        assert.equal(r0[`sum${n}`], sha(sum), `sum of ${n}`);
        assert.equal(r0[`mean${n}`], sha(sum.map((x) => Math.fround(x / 2))), `mean of ${n}`);
      }
      assert.deepEqual(r0.gather, [0, 10, 1, 11]);
      assert.deepEqual(r0.bcast, [42, 42, 42]);
    });

    await t.test('2 ranks x batch 2 across the link equal 1 rank x batch 4 (loss and parameters, fp32 tolerance)', async () => {
      const d1 = path.join(work, 'one'), d2 = path.join(work, 'two');
      await mkdir(d1);
      await mkdir(d2);
      const steps = 4;
      const [one, two] = await Promise.all([launchOne([WORKER, 'slice', d1, 'none', '4', String(steps)]),
        launchPair(work, [process.execPath, WORKER, 'slice', d2, 'mpi', '2', String(steps)])]);
      assert.equal(one.code, 0, one.stderr);
      assert.equal(two.code, 0, `mpirun failed after ${two.ms} ms (signal ${two.signal}):\n${two.stderr}`);
      await assertSliceRunsMatch(d1, d2, steps);
    });

    await t.test('prepareRun across the link: the anchor bit-identical on both ranks; rank 0 alone writes', async () => {
      const dir = path.join(work, 'run');
      await mkdir(dir);
      const r = await launchPair(work, [process.execPath, WORKER, 'run', dir, '6']);
      assert.equal(r.code, 0, `mpirun failed after ${r.ms} ms (signal ${r.signal}):\n${r.stderr}`);
      const [a, b] = [await rankJson<{ params: string; losses: number[] }>(dir, 0), await rankJson<{ params: string; losses: number[] }>(dir, 1)];
      assert.equal(a.params, b.params, 'ranks hold bit-identical anchors');
      assert.deepEqual(a.losses, b.losses);
      assert.equal(a.losses.length, 6);
      await readFile(path.join(dir, 'ck.safetensors')); // rank 0 wrote the checkpoint
    });

    await t.test('a sharded memory run across the link: anchor and replicated level bit-identical, sharded blocks disjoint', async () => {
      const dir = path.join(work, 'shard');
      await mkdir(dir);
      const tree = path.join(dir, 'tree.in.safetensors');
      await (await RetrievalTree.fitTexts(SHARD_DOCS.slice(10), { k: 4, p: 2, seed: 1 })).tree.save(tree);
      const r = await launchPair(work, [process.execPath, SHARD_WORKER, dir, tree, '4', '-1', 'fresh', '2']);
      assert.equal(r.code, 0, `mpirun failed after ${r.ms} ms (signal ${r.signal}):\n${r.stderr}`);
      type Out = { anchor: string; replicated: string; trained: string[]; losses: number[] };
      const [a, b] = [await rankJson<Out>(dir, 0), await rankJson<Out>(dir, 1)];
      assert.equal(a.anchor, b.anchor);
      assert.equal(a.replicated, b.replicated);
      assert.deepEqual(a.losses, b.losses);
      const blocks = (o: Out) => new Set(o.trained.map((x) => x.split(':').slice(0, 2).join(':')));
      const inB = blocks(b);
      assert.deepEqual([...blocks(a)].filter((x) => inB.has(x)), [], 'no sharded block trained on both ranks');
    });
  } finally {
    cleanup();
    await rm(work, { recursive: true, force: true });
  }
  const left = listOurs().filter((n) => (NS as readonly string[]).includes(n));
  assert.deepEqual(left, [], 'namespaces (and with them the veth pair) are deleted');
});
