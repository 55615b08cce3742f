/**
 * Small pieces every command of the CLI shares: option value parsers, one progress bar per phase of
 * a long command (rate and ETA on stderr), and the line a skipped bad record gets.
 */
import cliProgress from 'cli-progress';
import { Option, type Command } from 'commander';
import { performance } from 'node:perf_hooks';
import { HiermemError } from '../errors.js';

export function int(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n)) throw new HiermemError('E_INVALID_ARGUMENT', `expected an integer, got "${v}"`);
  return n;
}

export function num(v: string): number {
  const n = Number(v);
  if (!Number.isFinite(n)) throw new HiermemError('E_INVALID_ARGUMENT', `expected a number, got "${v}"`);
  return n;
}

/** The stderr line of a record skipped under --skip-bad. */
export function skippedRecordLine(r: { source: string; unit?: string; line: number; reason: string }): string {
  return `hiermem: skipped ${r.source}:${r.unit === 'row' ? ' row ' : ''}${r.line}: ${r.reason}\n`;
}

/**
 * A progress bar per phase: `enter` starts a new bar when the phase changes (and stops the previous
 * one); `update` moves the current bar. Disabled (no output at all) for --json or --no-progress.
 */
export class PhaseBars<P extends string> {
  private bar: cliProgress.SingleBar | null = null;
  private phase: P | null = null;
  private started = performance.now();

  constructor(private readonly enabled: boolean) {}

  /** Seconds since the current phase began (never 0, for rates). */
  seconds(): number {
    return Math.max(1e-3, (performance.now() - this.started) / 1000);
  }

  /** True when `phase` is a new phase; then a bar of `format` and `total` starts unless format is null. */
  enter(phase: P, format: string | null, total: number, payload: Record<string, string | number> = {}): boolean {
    if (!this.enabled || phase === this.phase) return false;
    this.stop();
    this.phase = phase;
    this.started = performance.now();
    if (format === null) return true;
    this.bar = new cliProgress.SingleBar({ format, noTTYOutput: true, notTTYSchedule: 10000, stream: process.stderr, hideCursor: true },
      cliProgress.Presets.shades_classic);
    this.bar.start(Math.max(0, total), 0, payload);
    return true;
  }

  update(value: number, payload: Record<string, string | number>): void {
    this.bar?.update(value, payload);
  }

  stop(): void {
    this.bar?.stop();
    this.bar = null;
  }
}

/** The options naming a corpus to stream (the readers of lib/data/readers), shared by prepare and cluster. */
export function addCorpusOptions(cmd: Command): Command {
  return cmd
    .option('--corpus <path>', 'a file, folder or quoted glob ("shards/*.jsonl.gz"; text, JSONL, .gz, Parquet); repeat for more',
      (v: string, prev: string[]) => [...prev, v], [] as string[])
    .addOption(new Option('--format <format>', 'corpus format (auto: by extension; .gz is decompressed)').choices(['auto', 'text', 'lines', 'jsonl', 'parquet']).default('auto'))
    .option('--field <name>', 'JSONL field / Parquet column holding the text', 'text')
    .option('--text-column <name>', 'same as --field (the Parquet text column)');
}
