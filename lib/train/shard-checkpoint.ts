/**
 * Checkpoints of a memory run whose bank is sharded by subtree (issue #14). Each rank writes its
 * shard file (`<name>.shard-<r>-of-<N>.step-<n>-<nonce>.safetensors`: the trained blocks it owns,
 * and the replicated ones, with their AdamW moments and step counts, and its own data order)
 * atomically; the ranks exchange the files' sizes and SHA-256; after that rank 0 writes the anchor
 * checkpoint, whose metadata `memory_shards` holds the manifest (ranks, shard plan with the owner of
 * every subtree, files with sizes and checksums), atomically and last: the checkpoint a run or an
 * evaluation opens is always one whose shard files were complete when it was written. Older shard
 * files are removed only after that.
 *
 * Loading needs no MPI: one process reads the manifest and opens the shards it needs (one rank's,
 * or the one holding a path's subtree, or all), each checked against the manifest (present, same
 * size and checksum, same run, rank and step), into a RAM bank whose other blocks stay untouched.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readdir, stat, unlink } from 'node:fs/promises';
import path from 'node:path';
import { HiermemError } from '../errors.js';
import type { Communicator } from '../dist/communicator.js';
import { metadataJson, readSafetensors, readSafetensorsHeader, removeStaleTempFiles, writeSafetensors, type TensorToWrite } from '../io/safetensors.js';
import type { MemoryBank } from '../memory/bank.js';
import { isReplicatedLevel, ownedNodeRanges, ownerOfBlock, parseShardPlan, type ShardPlan } from '../memory/shard-plan.js';
import type { ResolvedMemorySpec } from '../memory/spec.js';
import type { TrainerState } from './checkpoint.js';

export const SHARD_FORMAT = 'hiermem-bank-shard';
export const MANIFEST_FORMAT = 'hiermem-shards';
export const SHARD_VERSION = '1';
/** The anchor checkpoint's metadata entry that holds the manifest. */
export const MANIFEST_KEY = 'memory_shards';

export interface ShardFileEntry {
  rank: number;
  file: string;
  bytes: number;
  sha256: string;
}

export interface ShardManifest {
  format: typeof MANIFEST_FORMAT;
  version: string;
  runId: string;
  step: number;
  ranks: number;
  plan: ShardPlan;
  files: ShardFileEntry[];
}

/** Nodes of bank level `level` (level p: the one generic block). */
function nodesAt(spec: ResolvedMemorySpec, level: number): number {
  return level >= spec.levels.length ? 1 : spec.k ** (level + 1);
}

/** Levels that hold blocks: those with r_l > 0, and the generic block's (p) when on. */
function blockLevels(spec: ResolvedMemorySpec): number[] {
  const out = spec.levels.map((r, l) => (r > 0 ? l : -1)).filter((l) => l >= 0);
  if (spec.generic) out.push(spec.levels.length);
  return out;
}

/** Per level: the trained blocks (step count > 0) that `rank` holds, ascending. */
export function heldBlocks(bank: MemoryBank, plan: ShardPlan, rank: number): Map<number, number[]> {
  const out = new Map<number, number[]>();
  for (const level of blockLevels(bank.spec)) {
    const ranges = isReplicatedLevel(plan, level) ? [[0, nodesAt(bank.spec, level)] as [number, number]] : ownedNodeRanges(plan, rank, level);
    const nodes: number[] = [];
    for (const [a, b] of ranges) for (let n = a; n < b; n++) if (bank.blockSteps(level, n) > 0) nodes.push(n);
    if (nodes.length) out.set(level, nodes);
  }
  return out;
}

/** The tensors of a shard file: per level, node ids, weights, AdamW m and v, and step counts. */
function shardTensors(bank: MemoryBank, held: Map<number, number[]>): TensorToWrite[] {
  const out: TensorToWrite[] = [];
  for (const [level, nodes] of held) {
    const bf = bank.blockFloats(level);
    const stack = (kind: 'weight' | 'm' | 'v') => {
      const a = new Float32Array(nodes.length * bf);
      nodes.forEach((n, i) => a.set(bank.readBlock(level, n, kind), i * bf));
      return a;
    };
    out.push({ name: `level${level}.nodes`, dtype: 'I32', shape: [nodes.length], data: Int32Array.from(nodes) });
    out.push({ name: `level${level}.steps`, dtype: 'I32', shape: [nodes.length], data: Int32Array.from(nodes, (n) => bank.blockSteps(level, n)) });
    for (const kind of ['weight', 'm', 'v'] as const) {
      out.push({ name: `level${level}.${kind}`, dtype: 'F32', shape: [nodes.length, bf], get data() { return stack(kind); } });
    }
  }
  return out;
}

/** SHA-256 (hex) and size of a file. */
export async function fileDigest(file: string): Promise<{ bytes: number; sha256: string }> {
  const hash = createHash('sha256');
  let bytes = 0;
  try {
    for await (const chunk of createReadStream(file)) {
      hash.update(chunk as Buffer);
      bytes += (chunk as Buffer).length;
    }
  } catch (e) {
    throw new HiermemError('E_IO', `cannot read ${file}: ${(e as Error).message}`, { cause: e });
  }
  return { bytes, sha256: hash.digest('hex') };
}

/** A random hex id from rank 0, the same on every rank (through a broadcast of 16-bit values). */
export async function sharedId(comm: Communicator, words = 4): Promise<string> {
  const buf = new Float32Array(words);
  if (comm.rank === 0) {
    const r = randomBytes(words * 2);
    for (let i = 0; i < words; i++) buf[i] = r.readUInt16LE(2 * i);
  }
  await comm.broadcast(buf, 0);
  return Array.from(buf, (x) => x.toString(16).padStart(4, '0')).join('');
}

/** Every rank's (bytes, sha256), in rank order, through one all-gather of exactly representable floats. */
async function gatherDigests(comm: Communicator, mine: { bytes: number; sha256: string }): Promise<Array<{ bytes: number; sha256: string }>> {
  const W = 18;
  const buf = new Float32Array(W);
  buf[0] = Math.floor(mine.bytes / 2 ** 24);
  buf[1] = mine.bytes % 2 ** 24;
  const h = Buffer.from(mine.sha256, 'hex');
  for (let i = 0; i < 16; i++) buf[2 + i] = h.readUInt16LE(2 * i);
  const all = await comm.allGather(buf);
  return Array.from({ length: comm.size }, (_, r) => {
    const s = all.subarray(r * W, (r + 1) * W);
    const hb = Buffer.alloc(32);
    for (let i = 0; i < 16; i++) hb.writeUInt16LE(s[2 + i]!, 2 * i);
    return { bytes: s[0]! * 2 ** 24 + s[1]!, sha256: hb.toString('hex') };
  });
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** Matches the shard files of checkpoints named `<base>.safetensors`. */
function shardNamePattern(base: string): RegExp {
  return new RegExp(`^${escapeRegExp(base)}\\.shard-\\d+-of-\\d+\\.step-\\d+-[0-9a-f]+\\.safetensors$`);
}

export interface ShardSave {
  bank: MemoryBank;
  plan: ShardPlan;
  comm: Communicator;
  runId: string;
  /** This rank's trainer state (its own data order). */
  trainer: TrainerState;
  /** Writes the anchor checkpoint at `file` (rank 0 only) with these extra metadata entries. */
  writeAnchor(extraMetadata: Record<string, string>): Promise<void>;
}

/**
 * Writes a sharded checkpoint named `file` (every rank calls it; see the file comment for the order).
 * Resolves on every rank once the manifest is written.
 */
export async function saveShardedCheckpoint(file: string, s: ShardSave): Promise<void> {
  const { bank, plan, comm } = s;
  const dir = path.dirname(file);
  const base = path.basename(file).replace(/\.safetensors$/, '');
  const nonce = await sharedId(comm, 2);
  const name = `${base}.shard-${comm.rank}-of-${comm.size}.step-${s.trainer.step}-${nonce}.safetensors`;
  await writeSafetensors(path.join(dir, name), shardTensors(bank, heldBlocks(bank, plan, comm.rank)), {
    format: SHARD_FORMAT, version: SHARD_VERSION, run_id: s.runId, rank: String(comm.rank), ranks: String(comm.size),
    step: String(s.trainer.step), spec: JSON.stringify(bank.spec), d_model: String(bank.dModel), seed: String(bank.seed),
    trainer: JSON.stringify(s.trainer),
  });
  const digests = await gatherDigests(comm, await fileDigest(path.join(dir, name)));
  if (comm.rank === 0) {
    const files = digests.map((d, r) => ({ rank: r, file: `${base}.shard-${r}-of-${comm.size}.step-${s.trainer.step}-${nonce}.safetensors`, ...d }));
    const manifest: ShardManifest = { format: MANIFEST_FORMAT, version: SHARD_VERSION, runId: s.runId, step: s.trainer.step, ranks: comm.size, plan, files };
    await s.writeAnchor({ [MANIFEST_KEY]: JSON.stringify(manifest), memory_spec: JSON.stringify(bank.spec) });
    // only now are older shards unreferenced (a kill before this leaves garbage, removed next time)
    const ours = shardNamePattern(base);
    const keep = new Set(files.map((f) => f.file));
    for (const n of await readdir(dir).catch(() => [] as string[])) {
      if (ours.test(n) && !keep.has(n)) await unlink(path.join(dir, n)).catch(() => undefined);
    }
    await removeStaleTempFiles(dir, (target) => ours.test(target));
  }
  await comm.barrier(); // no rank goes on (and possibly writes the next checkpoint) before the manifest exists
}

/** The manifest of a sharded checkpoint (from its metadata), checked; null for an unsharded checkpoint. */
export function parseManifest(file: string, meta: Record<string, string>): ShardManifest | null {
  if (meta[MANIFEST_KEY] === undefined) return null;
  const raw = metadataJson(file, meta, MANIFEST_KEY);
  const bad = (why: string): never => { throw new HiermemError('E_CHECKPOINT_CORRUPT', `${file}: shard manifest ${why}`); };
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return bad('is not an object');
  const o = raw as Record<string, unknown>;
  if (o.format !== MANIFEST_FORMAT) return bad(`has format ${String(o.format)}`);
  if (o.version !== SHARD_VERSION) throw new HiermemError('E_CONFIG_INCOMPATIBLE', `${file}: shard manifest version ${String(o.version)}, this build reads ${SHARD_VERSION}`);
  if (typeof o.runId !== 'string' || !/^[0-9a-f]{1,64}$/.test(o.runId)) return bad('has no valid runId');
  if (!Number.isInteger(o.step) || (o.step as number) < 0) return bad('has no valid step');
  const plan = parseShardPlan(file, o.plan);
  if (o.ranks !== plan.ranks) return bad(`names ${String(o.ranks)} ranks, its plan ${plan.ranks}`);
  if (!Array.isArray(o.files) || o.files.length !== plan.ranks) return bad(`must list ${plan.ranks} files`);
  const files = o.files.map((f: unknown, r: number): ShardFileEntry => {
    const e = (typeof f === 'object' && f !== null ? f : {}) as Record<string, unknown>;
    if (e.rank !== r || typeof e.file !== 'string' || path.basename(e.file) !== e.file || e.file === '' ||
        !Number.isSafeInteger(e.bytes) || (e.bytes as number) < 0 || typeof e.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(e.sha256)) {
      return bad(`file entry ${r} is malformed (needs rank ${r}, a file name beside the checkpoint, bytes and sha256)`);
    }
    return { rank: r, file: e.file, bytes: e.bytes as number, sha256: e.sha256 };
  });
  return { format: MANIFEST_FORMAT, version: SHARD_VERSION, runId: o.runId, step: o.step as number, ranks: plan.ranks, plan, files };
}

/** Checks a shard file against its manifest entry: present, same size, same checksum (E_IO / E_CHECKPOINT_CORRUPT). */
export async function verifyShardFile(checkpoint: string, entry: ShardFileEntry): Promise<string> {
  const full = path.join(path.dirname(checkpoint), entry.file);
  let size: number;
  try {
    size = (await stat(full)).size;
  } catch {
    throw new HiermemError('E_IO', `${checkpoint}: shard file ${entry.file} of rank ${entry.rank} is missing`);
  }
  if (size !== entry.bytes) throw new HiermemError('E_CHECKPOINT_CORRUPT', `${checkpoint}: shard file ${entry.file} has ${size} bytes, the manifest says ${entry.bytes} (truncated or replaced)`);
  const d = await fileDigest(full);
  if (d.sha256 !== entry.sha256) throw new HiermemError('E_CHECKPOINT_CORRUPT', `${checkpoint}: shard file ${entry.file} does not match the manifest's checksum (changed or from another checkpoint)`);
  return full;
}

function sameSpec(a: ResolvedMemorySpec, raw: unknown): boolean {
  if (typeof raw !== 'object' || raw === null) return false;
  const b = raw as Record<string, unknown>;
  const same = (x: unknown, y: number[]) => Array.isArray(x) && x.length === y.length && x.every((v, i) => v === y[i]);
  return b.k === a.k && same(b.levels, a.levels) && same(b.layers, a.layers) && b.generic === a.generic;
}

/**
 * Restores per-block AdamW step counts on a fresh bank: the bank counts steps only through its
 * updates, so each block gets `steps` updates with learning rate 0 and zero gradient (weights and
 * moments unchanged: they are written afterwards). Costs steps x block size per block.
 */
async function restoreStepCounts(bank: MemoryBank, level: number, nodes: Int32Array, steps: Int32Array): Promise<void> {
  const bf = bank.blockFloats(level);
  const most = steps.reduce((a, s) => Math.max(a, s), 0);
  for (let round = 0; round < most; round++) {
    const live: number[] = [];
    for (let i = 0; i < nodes.length; i++) if (steps[i]! > round) live.push(level, nodes[i]!);
    await bank.adamwUpdateAsync(Int32Array.from(live), new Float32Array((live.length / 2) * bf), { lr: 0, beta1: 0.9, beta2: 0.95, eps: 1e-8, gradScale: 1 }, 0);
  }
}

/**
 * Reads one shard (verified against `entry`) into `bank` (fresh: blocks never trained), and returns
 * the rank's trainer state. `replicated`: also load the replicated levels (skip them when another
 * shard already did). Any disagreement with the manifest → E_CHECKPOINT_CORRUPT / E_CONFIG_INCOMPATIBLE.
 */
export async function loadShard(checkpoint: string, manifest: ShardManifest, rank: number, bank: MemoryBank, replicated = true): Promise<TrainerState | undefined> {
  const entry = manifest.files[rank]!;
  const file = await verifyShardFile(checkpoint, entry);
  const header = await readSafetensorsHeader(file);
  const md = header.metadata;
  const bad = (why: string): never => { throw new HiermemError('E_CHECKPOINT_CORRUPT', `${file}: ${why}`); };
  if (md.format !== SHARD_FORMAT) bad(`not a hiermem bank shard (format ${String(md.format)})`);
  if (md.run_id !== manifest.runId || md.step !== String(manifest.step)) bad(`belongs to run ${String(md.run_id)} step ${String(md.step)}, the manifest to run ${manifest.runId} step ${manifest.step}`);
  if (md.rank !== String(rank) || md.ranks !== String(manifest.ranks)) bad(`is rank ${String(md.rank)} of ${String(md.ranks)}, the manifest lists it as rank ${rank} of ${manifest.ranks}`);
  let spec: unknown;
  try {
    spec = JSON.parse(md.spec ?? '');
  } catch {
    bad('metadata "spec" is not valid JSON');
  }
  if (!sameSpec(bank.spec, spec) || md.d_model !== String(bank.dModel) || md.seed !== String(bank.seed)) {
    throw new HiermemError('E_CONFIG_INCOMPATIBLE', `${file}: its bank (spec ${String(md.spec)}, d_model ${String(md.d_model)}, seed ${String(md.seed)}) is not the checkpoint's`);
  }
  const levels = new Set<number>();
  for (const name of header.tensors.keys()) {
    const m = /^level(\d+)\.(nodes|steps|weight|m|v)$/.exec(name);
    if (!m) bad(`unexpected tensor ${name}`);
    levels.add(Number(m![1]));
  }
  const { plan } = manifest;
  const contents = await readSafetensors(file);
  for (const level of [...levels].sort((a, b) => a - b)) {
    if (level > bank.levels || (level === bank.levels && !bank.spec.generic) || (level < bank.levels && bank.spec.levels[level] === 0)) bad(`holds level ${level}, which the bank has no blocks at`);
    if (!replicated && isReplicatedLevel(plan, level)) continue;
    const t = (kind: string) => contents.tensors.get(`level${level}.${kind}`) ?? bad(`level ${level} lacks its ${kind} tensor`);
    const nodesT = t('nodes'), stepsT = t('steps');
    const n = nodesT.shape[0] ?? 0, bf = bank.blockFloats(level);
    if (nodesT.dtype !== 'I32' || stepsT.dtype !== 'I32' || nodesT.shape.length !== 1 || stepsT.shape.length !== 1 || stepsT.shape[0] !== n) bad(`level ${level}: nodes and steps must be I32 [n]`);
    const nodes = nodesT.data as Int32Array, steps = stepsT.data as Int32Array;
    const limit = nodesAt(bank.spec, level);
    for (let i = 0; i < n; i++) {
      if (nodes[i]! < 0 || nodes[i]! >= limit || (i > 0 && nodes[i]! <= nodes[i - 1]!)) bad(`level ${level}: node ids must ascend within [0, ${limit})`);
      const owner = ownerOfBlock(plan, level, nodes[i]!);
      if (owner !== -1 && owner !== rank) bad(`holds block (${level}, ${nodes[i]}) of rank ${owner}'s subtree`);
      if (steps[i]! < 1) bad(`level ${level}: step counts must be >= 1`);
    }
    const data = {} as Record<'weight' | 'm' | 'v', Float32Array>;
    for (const kind of ['weight', 'm', 'v'] as const) {
      const x = t(kind);
      if (x.dtype !== 'F32' || x.shape.length !== 2 || x.shape[0] !== n || x.shape[1] !== bf) bad(`level ${level}: ${kind} must be F32 [${n}, ${bf}]`);
      data[kind] = x.data as Float32Array;
    }
    for (let i = 0; i < n; i++) if (bank.blockSteps(level, nodes[i]!) !== 0) bad(`block (${level}, ${nodes[i]}) is loaded twice`);
    await restoreStepCounts(bank, level, nodes, steps);
    for (let i = 0; i < n; i++) {
      for (const kind of ['weight', 'm', 'v'] as const) bank.writeBlock(level, nodes[i]!, data[kind].subarray(i * bf, (i + 1) * bf), kind);
    }
  }
  if (md.trainer === undefined) return undefined;
  const tr = metadataJson(file, md, 'trainer') as TrainerState;
  if (typeof tr !== 'object' || tr === null || tr.step !== manifest.step || typeof tr.tokensSeen !== 'number') bad('trainer metadata is malformed');
  return tr;
}

/** The shard ranks a path's blocks live in: the owner of its subtree (a generic path: rank 0, which holds the replicated blocks too). */
export function shardForPath(manifest: ShardManifest, pathNodes: ArrayLike<number>): number {
  const s = manifest.plan.shardLevel;
  const node = pathNodes[s - 1]!;
  return pathNodes[0]! < 0 || node < 0 ? 0 : manifest.plan.owners[node] ?? 0;
}

/** Loads the listed shards' blocks into `bank` (default: all), the replicated levels once. */
export async function loadShards(checkpoint: string, manifest: ShardManifest, bank: MemoryBank, ranks?: readonly number[]): Promise<void> {
  const which = [...new Set(ranks ?? manifest.files.map((f) => f.rank))].sort((a, b) => a - b);
  for (const [i, r] of which.entries()) {
    if (!Number.isInteger(r) || r < 0 || r >= manifest.ranks) throw new HiermemError('E_INVALID_ARGUMENT', `shard ${r} does not exist (the checkpoint has ${manifest.ranks})`);
    await loadShard(checkpoint, manifest, r, bank, i === 0);
  }
}

/** What `hiermem info` shows of a sharded checkpoint: the plan, and each file's state by size (checksums are checked on load). */
export async function describeShards(checkpoint: string, meta: Record<string, string>): Promise<Record<string, unknown> | null> {
  const m = parseManifest(checkpoint, meta);
  if (!m) return null;
  const files = await Promise.all(m.files.map(async (f) => {
    const size = await stat(path.join(path.dirname(checkpoint), f.file)).then((s) => s.size, () => -1);
    return { ...f, state: size < 0 ? 'missing' : size !== f.bytes ? `${size} bytes (truncated or replaced)` : 'present' };
  }));
  const { plan } = m;
  return { ranks: m.ranks, shardLevel: plan.shardLevel, step: m.step, runId: m.runId, balance: plan.balance,
    subtrees: plan.owners.map((owner, subtree) => ({ subtree, owner, [plan.balance]: plan.counts[subtree] })), files };
}
