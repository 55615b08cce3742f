/**
 * `hiermem import hf DIR --out FILE`: a Hugging Face Llama-family model folder (lib/io/hf-import.ts)
 * saved as an ordinary hiermem checkpoint: the anchor, its tokenizer embedded, and the original
 * config.json in the metadata (export keeps its other fields). Registered on the program by main.ts.
 */
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import type { Command } from 'commander';
import { HiermemError } from '../errors.js';
import { HF_CONFIG_METADATA, loadHfModel } from '../io/hf-import.js';
import { DEFAULT_IMPORT_SEQ_LEN } from '../io/hf-config.js';
import { saveCheckpoint } from '../train/checkpoint.js';
import { int } from './args.js';

export interface ImportSummary {
  out: string;
  architecture: string;
  parameters: number;
  vocabSize: number;
  tokenizerVocab: number;
  seqLen: number;
  /** dtype → tensors of it in the source files. */
  dtypes: Record<string, number>;
}

/** The folder as a hiermem checkpoint at `out`. */
export async function importHf(dir: string, out: string, opts: { seqLen?: number } = {}): Promise<ImportSummary> {
  const m = await loadHfModel(dir, opts);
  try {
    if (path.dirname(out) !== '.') await mkdir(path.dirname(out), { recursive: true }).catch((e: Error) => {
      throw new HiermemError('E_IO', `cannot create ${path.dirname(out)}: ${e.message}`, { cause: e });
    });
    await saveCheckpoint(out, { model: m.model, tokenizer: m.tokenizer, extraMetadata: { [HF_CONFIG_METADATA]: JSON.stringify(m.hfConfig) } });
    return { out, architecture: m.architecture, parameters: m.model.paramCount, vocabSize: m.config.vocabSize,
      tokenizerVocab: m.tokenizer.vocabSize, seqLen: m.config.seqLen, dtypes: m.dtypes };
  } finally {
    m.model.dispose();
  }
}

interface ImportHfFlags { out: string; seqLen?: number; json: boolean }

async function cmdImportHf(dir: string, f: ImportHfFlags): Promise<void> {
  const s = await importHf(dir, f.out, f.seqLen !== undefined ? { seqLen: f.seqLen } : {});
  if (f.json) process.stdout.write(JSON.stringify(s) + '\n');
  else {
    const dt = Object.entries(s.dtypes).map(([k, v]) => `${v} ${k}`).join(', ');
    process.stderr.write(`hiermem: imported ${s.architecture} from ${dir}: ${s.parameters.toLocaleString('en-US')} parameters (${dt} tensors, now F32), vocab ${s.vocabSize} (tokenizer ${s.tokenizerVocab}), context ${s.seqLen}; wrote ${s.out}\n`);
  }
}

/** Adds `import hf` to the program. */
export function registerImportCommand(program: Command): void {
  const imp = program.command('import').description('bring a model from another format into a hiermem checkpoint');
  imp.command('hf')
    .description('a Hugging Face Llama-family folder (LlamaForCausalLM, MistralForCausalLM without sliding window, Qwen2ForCausalLM): config.json, model.safetensors or its sharded index, tokenizer.json')
    .argument('<dir>', 'the model folder (as downloaded from the Hub)')
    .requiredOption('--out <file>', 'the checkpoint to write (.safetensors); use it as --anchor, --ckpt, ...')
    .option('--seq-len <n>', `context length for training and evaluation (default: max_position_embeddings, at most ${DEFAULT_IMPORT_SEQ_LEN}; activations grow with it)`, int)
    .option('--json', 'print a summary as one JSON line on stdout', false)
    .action((dir: string, f: ImportHfFlags) => cmdImportHf(dir, f));
}
