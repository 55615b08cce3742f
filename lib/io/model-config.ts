/**
 * The model config JSON file of `hiermem train --config FILE`: a JSON object overriding a preset
 * field by field. Only known fields are accepted; values are checked by resolveModelConfig.
 */
import { readFile } from 'node:fs/promises';
import { HiermemError } from '../errors.js';
import type { ModelConfig } from '../model/config.js';

export const MODEL_CONFIG_FIELDS: readonly string[] = Object.freeze(
  ['dModel', 'nLayers', 'nHeads', 'headDim', 'ffnHidden', 'seqLen', 'normEps', 'ropeBase', 'seed',
    'nKvHeads', 'qkNorm', 'qkvBias', 'tieEmbeddings', 'ropeScaling']);

/** Parses the text of a model config file (`source` names it in messages). Bad JSON or an unknown field → E_CONFIG_INVALID. */
export function parseModelConfigJson(text: string, source: string): Partial<ModelConfig> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new HiermemError('E_CONFIG_INVALID', `${source}: not valid JSON`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new HiermemError('E_CONFIG_INVALID', `${source}: must be a JSON object`);
  const known = new Set(MODEL_CONFIG_FIELDS);
  for (const k of Object.keys(parsed)) {
    if (!known.has(k)) throw new HiermemError('E_CONFIG_INVALID', `${source}: unknown field "${k}" (known: ${MODEL_CONFIG_FIELDS.join(', ')})`);
  }
  return parsed as Partial<ModelConfig>;
}

/** Reads and parses a model config file; an unreadable file → E_IO. */
export async function readModelConfigFile(file: string): Promise<Partial<ModelConfig>> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    throw new HiermemError('E_IO', `cannot read model config ${file}: ${(e as Error).message}`, { cause: e });
  }
  return parseModelConfigJson(text, file);
}
