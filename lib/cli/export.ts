/**
 * `hiermem export hf CKPT --out DIR`: a checkpoint (file or run folder; an anchor or a memory run)
 * written as a Hugging Face model folder (lib/io/hf-export.ts); a memory run's bank and tree go
 * beside it with a README.md. Registered on the program by main.ts.
 */
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { type Command, Option } from 'commander';
import { HiermemError } from '../errors.js';
import { HF_CONFIG_METADATA } from '../io/hf-import.js';
import { exportHf, type HfExportDtype, type HfExportInput, type HfExportSummary } from '../io/hf-export.js';
import { resolveMemorySpec, type ResolvedMemorySpec } from '../memory/spec.js';
import { loadCheckpoint } from '../train/checkpoint.js';
import { TREE_FILE, resolveCheckpointPath } from '../train/run.js';

function parseObject(text: string, source: string): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new HiermemError('E_CONFIG_INVALID', `${source}: not valid JSON (${(e as Error).message})`, { cause: e });
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new HiermemError('E_CONFIG_INVALID', `${source}: must be a JSON object`);
  return v as Record<string, unknown>;
}

/** A checkpoint (file or run folder) → a Hugging Face folder. `baseConfig`: a config.json to keep the other fields of. */
export async function exportCheckpointHf(ckpt: string, outDir: string, opts: { baseConfig?: string; dtype?: HfExportDtype } = {}): Promise<HfExportSummary> {
  const file = await resolveCheckpointPath(ckpt);
  const ck = await loadCheckpoint(file, { maxBatch: 1, withOptimizer: false });
  try {
    const meta = ck.extraMetadata ?? {};
    const input: HfExportInput = { model: ck.model, tokenizer: ck.tokenizer, ...(opts.dtype ? { dtype: opts.dtype } : {}) };
    if (opts.baseConfig !== undefined) {
      let text: string;
      try {
        text = await readFile(opts.baseConfig, 'utf8');
      } catch (e) {
        throw new HiermemError('E_IO', `cannot read ${opts.baseConfig}: ${(e as Error).message}`, { cause: e });
      }
      input.baseConfig = parseObject(text, opts.baseConfig);
    } else if (meta[HF_CONFIG_METADATA] !== undefined) {
      input.baseConfig = parseObject(meta[HF_CONFIG_METADATA], `${file}: metadata ${HF_CONFIG_METADATA}`);
    }
    const bank = meta.memory_bank;
    if (bank !== undefined) {
      if (path.basename(bank) !== bank) throw new HiermemError('E_CHECKPOINT_CORRUPT', `${file}: memory_bank must be a file name beside the checkpoint`);
      if (meta.memory_spec === undefined) throw new HiermemError('E_CHECKPOINT_CORRUPT', `${file}: a memory checkpoint without memory_spec`);
      let spec: ResolvedMemorySpec;
      try {
        spec = resolveMemorySpec(parseObject(meta.memory_spec, `${file}: memory_spec`) as never, ck.model.config);
      } catch (e) {
        throw new HiermemError('E_CHECKPOINT_CORRUPT', `${file}: memory_spec: ${(e as Error).message}`, { cause: e });
      }
      const treeFile = path.join(path.dirname(file), TREE_FILE);
      const hasTree = await stat(treeFile).then((s) => s.isFile(), () => false);
      input.memory = { bankFile: path.join(path.dirname(file), bank), spec, ...(hasTree ? { treeFile } : {}) };
    }
    return await exportHf(input, outDir);
  } finally {
    ck.model.dispose();
  }
}

interface ExportHfFlags { out: string; baseConfig?: string; dtype: HfExportDtype; json: boolean }

async function cmdExportHf(ckpt: string, f: ExportHfFlags): Promise<void> {
  const s = await exportCheckpointHf(ckpt, f.out, { dtype: f.dtype, ...(f.baseConfig !== undefined ? { baseConfig: f.baseConfig } : {}) });
  if (f.json) process.stdout.write(JSON.stringify(s) + '\n');
  else process.stderr.write(`hiermem: exported ${s.parameters.toLocaleString('en-US')} parameters as ${s.architecture} to ${s.out}: ${s.files.join(', ')}\n`);
}

/** Adds `export hf` to the program. */
export function registerExportCommand(program: Command): void {
  const exp = program.command('export').description('write a checkpoint in another format');
  exp.command('hf')
    .description('a Hugging Face folder transformers loads (LlamaForCausalLM, or Qwen2ForCausalLM with q/k/v biases); a memory run\'s bank and tree beside it with a README.md')
    .argument('<ckpt>', 'checkpoint file or train --out folder')
    .requiredOption('--out <dir>', 'the folder to write')
    .option('--base-config <file>', 'a config.json whose other fields (max_position_embeddings, token ids, ...) to keep, e.g. the original model\'s (default: the one import recorded, if any)')
    .addOption(new Option('--dtype <dtype>', 'weights in model.safetensors: float32 (exact) or bfloat16 (half the size, rounded to nearest even)').choices(['float32', 'bfloat16']).default('float32'))
    .option('--json', 'print a summary as one JSON line on stdout', false)
    .action((ckpt: string, f: ExportHfFlags) => cmdExportHf(ckpt, f));
}
