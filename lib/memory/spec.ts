/**
 * The memory hierarchy's shape and its sizes, counted as the paper counts them (§2.3, §3.4):
 * a level-l block of multiplier r_l holds 3 · Lm · d · r_l parameters (a gate row, an up row and a
 * down column of length d per memory layer and unit); level l has k^l nodes.
 */
import { HiermemError } from '../errors.js';
import type { NativeMemorySpec } from '../native-types.js';

export interface MemorySpec {
  /** Branching factor (paper: 16). */
  k: number;
  /** r_l for levels 1..p (paper's 160M: [256, 64, 16, 0]); 0 = no memory at that level. */
  levels: number[];
  /** Indices of the layers that carry memories (default: all, the paper's uniform placement). */
  layers?: number[];
  /** Memory type; only FFN-memories (the paper's winner) exist so far. */
  type?: 'ffn';
  /** Add the paper's generic-memory control: one block of the fetched size, used with probability 1/(k+1). */
  generic?: boolean;
}

export interface ResolvedMemorySpec {
  k: number;
  levels: number[];
  layers: number[];
  type: 'ffn';
  generic: boolean;
}

export interface MemorySizes {
  /** Parameters of one block at each level. */
  blockParams: number[];
  /** Nodes at each level (k^l). */
  nodes: number[];
  /** All bank parameters: sum_l k^l · blockParams[l] (plus the generic block if any). */
  bankParams: number;
  /** Parameters fetched for one document: sum_l blockParams[l]. */
  fetchedParams: number;
  /** Hidden units added to each memory layer's SwiGLU by a fetched path: R = sum r_l. */
  unitsPerLayer: number;
  /** fetched / anchor (paper's sizing rule: about 1/10). */
  fetchedToAnchor?: number;
}

export function resolveMemorySpec(spec: MemorySpec, model: { nLayers: number; dModel: number }): ResolvedMemorySpec {
  const bad = (msg: string): never => { throw new HiermemError('E_CONFIG_INVALID', `memory spec: ${msg}`); };
  if (!Number.isInteger(spec.k) || spec.k < 2) bad(`k must be an integer >= 2, got ${spec.k}`);
  if (!Array.isArray(spec.levels) || spec.levels.length < 1) bad('levels must list r_l for at least one level');
  if (spec.levels.length > 16) bad('at most 16 levels');
  spec.levels.forEach((r, i) => { if (!Number.isInteger(r) || r < 0) bad(`levels[${i}] = ${r} must be an integer >= 0`); });
  if (spec.levels.every((r) => r === 0)) bad('every level has r_l = 0: block size 0, nothing to fetch');
  if (Math.pow(spec.k, spec.levels.length) > 2 ** 31 - 1) bad(`k^p = ${spec.k}^${spec.levels.length} exceeds 2^31 nodes`);
  const layers = spec.layers ?? Array.from({ length: model.nLayers }, (_, i) => i);
  if (layers.length === 0) bad('layers is empty');
  layers.forEach((l) => { if (!Number.isInteger(l) || l < 0 || l >= model.nLayers) bad(`memory layer index ${l} is out of range [0, ${model.nLayers})`); });
  if (new Set(layers).size !== layers.length) bad('layers has duplicates');
  if (spec.type !== undefined && spec.type !== 'ffn') bad(`type "${String(spec.type)}" is not supported (only 'ffn')`);
  return { k: spec.k, levels: [...spec.levels], layers: [...layers].sort((a, b) => a - b), type: 'ffn', generic: spec.generic ?? false };
}

export function memorySizes(spec: ResolvedMemorySpec, model: { dModel: number }, anchorParams?: number): MemorySizes {
  const c0 = 3 * spec.layers.length * model.dModel;
  const blockParams = spec.levels.map((r) => c0 * r);
  const nodes = spec.levels.map((_, i) => Math.pow(spec.k, i + 1));
  const fetchedParams = blockParams.reduce((a, b) => a + b, 0);
  let bankParams = blockParams.reduce((a, b, i) => a + b * nodes[i]!, 0);
  if (spec.generic) bankParams += fetchedParams;
  const out: MemorySizes = { blockParams, nodes, bankParams, fetchedParams, unitsPerLayer: spec.levels.reduce((a, b) => a + b, 0) };
  if (anchorParams !== undefined) out.fetchedToAnchor = fetchedParams / anchorParams;
  return out;
}

export function toNativeSpec(spec: ResolvedMemorySpec, dModel: number, optimizer: boolean): NativeMemorySpec {
  return { k: spec.k, levels: spec.levels, memoryLayers: spec.layers.length, dModel, generic: spec.generic, optimizer };
}

/** (L): memory layer index of each model layer, -1 where the layer has no memory. */
export function layerToMemory(spec: ResolvedMemorySpec, nLayers: number): Int32Array {
  const map = new Int32Array(nLayers).fill(-1);
  spec.layers.forEach((l, j) => { map[l] = j; });
  return map;
}
