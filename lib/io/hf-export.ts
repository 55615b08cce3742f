/**
 * An anchor (and its tokenizer) → a Hugging Face model folder that transformers loads as it is:
 * config.json, model.safetensors (float32, or bfloat16 on request; HF names and shapes), tokenizer.json and
 * tokenizer_config.json. With memories, the bank file is copied beside it with the retrieval tree
 * and a README.md saying how to fetch a path's blocks. Everything is written to the folder
 * atomically per file (the weights through writeSafetensors' temp-file-and-rename).
 */
import { copyFile, mkdir, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { HiermemError } from '../errors.js';
import type { AnchorModel } from '../model/anchor.js';
import { HfTokenizer } from '../data/hf-tokenizer.js';
import { byteLevelAlphabet } from '../data/hf-tokenizer-train.js';
import { ByteTokenizer, type Tokenizer } from '../data/tokenizer.js';
import type { ResolvedMemorySpec } from '../memory/spec.js';
import { writeSafetensors, type TensorToWrite } from './safetensors.js';
import { hfConfigFromModel } from './hf-config.js';
import { elementCount, hfTensorPlan } from './hf-tensors.js';

export const EXPORTED_BANK_FILE = 'memory_bank.safetensors';
export const EXPORTED_TREE_FILE = 'tree.safetensors';
/** The memories' shape in JSON, for code that fetches blocks: { k, levels, layers, generic, bank, tree }. */
export const EXPORTED_MEMORY_CONFIG = 'memory_config.json';

/** The weights' dtype in model.safetensors: float32 (exact) or bfloat16 (half the size, rounded to nearest even). */
export type HfExportDtype = 'float32' | 'bfloat16';

export interface HfExportInput {
  model: AnchorModel;
  tokenizer: Tokenizer;
  /** Default float32. */
  dtype?: HfExportDtype;
  /** A config.json whose other fields are kept (the imported model's); absent: a fresh Llama config. */
  baseConfig?: Record<string, unknown>;
  /** The memories of a memory checkpoint: its bank file, its tree file (if any) and its spec. */
  memory?: { bankFile: string; treeFile?: string; spec: ResolvedMemorySpec };
}

export interface HfExportSummary {
  out: string;
  architecture: string;
  parameters: number;
  files: string[];
}

async function writeText(file: string, text: string): Promise<void> {
  const tmp = `${file}.tmp-${process.pid}`;
  try {
    await writeFile(tmp, text);
    await rename(tmp, file);
  } catch (e) {
    throw new HiermemError('E_IO', `cannot write ${file}: ${(e as Error).message}`, { cause: e });
  }
}

/**
 * The byte tokenizer as a tokenizer.json: a byte-level BPE without merges, whose 256 byte tokens
 * have ids 0..255 (the byte values) and whose specials keep ids 256..258, so every id means what
 * it meant.
 */
export function byteTokenizerJson(): Record<string, unknown> {
  const vocab: Record<string, number> = {};
  byteLevelAlphabet().forEach((ch, b) => { vocab[ch] = b; });
  const special = (id: number, content: string) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
  return {
    version: '1.0', truncation: null, padding: null,
    added_tokens: [special(ByteTokenizer.EOT, '<|eot|>'), special(ByteTokenizer.PAD, '<|pad|>'), special(ByteTokenizer.BOS, '<|bos|>')],
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
    post_processor: null,
    decoder: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null,
      fuse_unk: false, byte_fallback: false, vocab, merges: [] },
  };
}

function tokenizerFiles(t: Tokenizer): { tokenizer: Record<string, unknown>; config: Record<string, unknown> } {
  if (t instanceof HfTokenizer) {
    const r = t.toJSON();
    // the record's config as it is: re-imported, the tokenizer hashes to the same identity
    return { tokenizer: r.tokenizer, config: { ...r.config, tokenizer_class: 'PreTrainedTokenizerFast' } };
  }
  if (t instanceof ByteTokenizer) {
    return { tokenizer: byteTokenizerJson(), config: { eos_token: '<|eot|>', pad_token: '<|pad|>', bos_token: '<|bos|>', tokenizer_class: 'PreTrainedTokenizerFast' } };
  }
  throw new HiermemError('E_CONFIG_INCOMPATIBLE', `tokenizer ${t.name} has no tokenizer.json form`);
}

/** float32 → bfloat16 bits, rounded to nearest even (NaN stays NaN): what torch's .to(torch.bfloat16) gives. */
export function toBfloat16(x: Float32Array): Uint16Array {
  const bits = new Uint32Array(x.buffer, x.byteOffset, x.length);
  const out = new Uint16Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const b = bits[i]!;
    out[i] = (b & 0x7fffffff) > 0x7f800000 ? (b >>> 16) | 0x40 : (b + 0x7fff + ((b >>> 16) & 1)) >>> 16;
  }
  return out;
}

/** The anchor's tensors under HF names (views into the model, split where ours stacks q/k/v). */
export function hfTensorsOf(model: AnchorModel, dtype: HfExportDtype = 'float32'): TensorToWrite[] {
  const out: TensorToWrite[] = [];
  for (const m of hfTensorPlan(model.config)) {
    const src = model.tensor(m.ours);
    let row = 0;
    for (const p of m.parts) {
      const n = elementCount(p.shape);
      const view = src.subarray(row, row + n);
      out.push(dtype === 'bfloat16' ? { name: p.hf, dtype: 'BF16', shape: p.shape, data: toBfloat16(view) } : { name: p.hf, dtype: 'F32', shape: p.shape, data: view });
      row += n;
    }
    if (row !== src.length) throw new HiermemError('E_SHAPE_MISMATCH', `${m.ours}: ${src.length} values, the HF tensors take ${row}`);
  }
  return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

function memoryReadme(spec: ResolvedMemorySpec, dModel: number, hasTree: boolean): string {
  const levels = spec.levels.map((r, i) => `| ${i + 1} | ${spec.k ** (i + 1)} | ${r} | \`memory.level${i + 1}.weight\` [${spec.k ** (i + 1)}, ${spec.layers.length}, 3, ${r}, ${dModel}] |`).join('\n');
  return `# Hierarchical memories of this model

This folder is a Hugging Face model (\`config.json\`, \`model.safetensors\`, \`tokenizer.json\`):
the anchor alone, which transformers loads as it is. It was trained with hierarchical parametric
memories (hiermem), stored beside it:

- \`${EXPORTED_MEMORY_CONFIG}\`: the same facts as JSON (k, r per level, memory layers, file names).
- \`${EXPORTED_BANK_FILE}\`: the memory bank, a tree with branching factor k = ${spec.k} and
  ${spec.levels.length} level(s); every node of level l owns one block of r_l extra SwiGLU units for each
  memory layer.${hasTree ? `\n- \`${EXPORTED_TREE_FILE}\`: the retrieval tree (k-means centroids per level and the fitted text embedder) that routes a text to its path.` : ''}

| level | nodes | r (units) | tensor [nodes, memory layers, 3, r, d] |
|---|---|---|---|
${levels}
${spec.generic ? `\n\`memory.generic.weight\` is the generic block (the control without retrieval).\n` : ''}
Memory layers (model layer indices): ${spec.layers.join(', ')}. Tensors ending in \`.adam_m\`,
\`.adam_v\`, \`.steps\` are optimizer state; \`.initialized\` marks blocks ever trained (the others
are zeros and change nothing).

## Fetching a path

A text's path is one node per level, node n_l of level l in [0, k^l); the children of node i at
level l are nodes i·k … i·k + k − 1 of level l + 1. \`hiermem generate --ckpt <run>\` prints the path it
routes a prompt to${hasTree ? ', and the tree file here routes any text (`RetrievalTree.load(...).assignText(text)` in hiermem)' : ''}.
For memory layer j (model layer \`layers[j]\` above), the path's blocks add units to that layer's MLP:

\`\`\`python
import torch
from safetensors import safe_open

path = [3, 29]  # n_1, n_2, ...: one node per level
with safe_open("${EXPORTED_BANK_FILE}", framework="pt") as f:  # reads only the fetched rows
    W = torch.cat([f.get_slice(f"memory.level{l + 1}.weight")[n] for l, n in enumerate(path)], dim=2)
# W: (memory layers, 3, R, d) with R = sum of r_l; per memory layer j:
#   gate, up, down = W[j, 0], W[j, 1], W[j, 2]   (each R x d)
#   mlp(x) = down_proj(silu(gate_proj(x)) * up_proj(x)) + (silu(x @ gate.T) * (x @ up.T)) @ down
\`\`\`

That is exactly one SwiGLU of inner width intermediate_size + R: patch the MLP's forward of those
layers (or concatenate the rows into gate_proj / up_proj and the columns into down_proj for a fixed path).
`;
}

/** Writes the folder (created if needed; files of the same names replaced). */
export async function exportHf(input: HfExportInput, outDir: string): Promise<HfExportSummary> {
  const { model, tokenizer } = input;
  const ids: { eos: number; bos?: number; pad?: number } = { eos: tokenizer.eotId };
  if (tokenizer.bosId !== undefined) ids.bos = tokenizer.bosId;
  if (tokenizer.padId !== undefined) ids.pad = tokenizer.padId;
  const dtype = input.dtype ?? 'float32';
  const config: Record<string, unknown> = { ...hfConfigFromModel(model.config, ids, input.baseConfig), torch_dtype: dtype };
  const tok = tokenizerFiles(tokenizer);
  try {
    await mkdir(outDir, { recursive: true });
  } catch (e) {
    throw new HiermemError('E_IO', `cannot create ${outDir}: ${(e as Error).message}`, { cause: e });
  }
  const files = ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json'];
  await writeSafetensors(path.join(outDir, 'model.safetensors'), hfTensorsOf(model, dtype), { format: 'pt' });
  await writeText(path.join(outDir, 'config.json'), JSON.stringify(config, null, 2) + '\n');
  await writeText(path.join(outDir, 'tokenizer.json'), JSON.stringify(tok.tokenizer));
  await writeText(path.join(outDir, 'tokenizer_config.json'), JSON.stringify(tok.config, null, 2) + '\n');
  if (input.memory) {
    const m = input.memory;
    const copy = async (from: string, name: string) => {
      try {
        await copyFile(from, path.join(outDir, name));
      } catch (e) {
        throw new HiermemError('E_IO', `cannot copy ${from} to ${outDir}: ${(e as Error).message}`, { cause: e });
      }
      files.push(name);
    };
    await copy(m.bankFile, EXPORTED_BANK_FILE);
    if (m.treeFile !== undefined) await copy(m.treeFile, EXPORTED_TREE_FILE);
    const memoryConfig = { k: m.spec.k, levels: m.spec.levels, layers: m.spec.layers, generic: m.spec.generic, dModel: model.config.dModel,
      bank: EXPORTED_BANK_FILE, tree: m.treeFile !== undefined ? EXPORTED_TREE_FILE : null };
    await writeText(path.join(outDir, EXPORTED_MEMORY_CONFIG), JSON.stringify(memoryConfig, null, 2) + '\n');
    await writeText(path.join(outDir, 'README.md'), memoryReadme(m.spec, model.config.dModel, m.treeFile !== undefined));
    files.push(EXPORTED_MEMORY_CONFIG, 'README.md');
  }
  return { out: outDir, architecture: (config.architectures as string[])[0]!, parameters: model.paramCount, files };
}
