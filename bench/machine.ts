/**
 * What both benchmarks need to know about the machine: CPU description, how busy other processes
 * keep it, and robust summary statistics of repeated timings.
 */
import fs from 'node:fs';
import os from 'node:os';

export interface Stat {
  median: number;
  min: number;
  max: number;
  /** (max - min) / median */
  spread: number;
  samples: number[];
}

export function stat(samples: number[]): Stat {
  const s = [...samples].sort((a, b) => a - b);
  const mid = s.length >> 1;
  const median = s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
  return { median, min: s[0]!, max: s[s.length - 1]!, spread: (s[s.length - 1]! - s[0]!) / median, samples };
}

function cpuTimes(): { busy: number; total: number } | null {
  try {
    const line = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
    const v = line.trim().split(/\s+/).slice(1).map(Number);
    const total = v.slice(0, 8).reduce((a, b) => a + b, 0); // user..steal (guest is inside user)
    const idle = (v[3] ?? 0) + (v[4] ?? 0);
    return { busy: total - idle, total };
  } catch {
    return null;
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Cores kept busy by other processes over `ms` (the machine's busy time minus this process's CPU
 * time), or NaN where /proc/stat is absent.
 */
export async function busyCores(ms: number): Promise<number> {
  const a = cpuTimes();
  const own0 = process.cpuUsage();
  const t0 = performance.now();
  await sleep(ms);
  const b = cpuTimes();
  const own = process.cpuUsage(own0);
  const wallMs = performance.now() - t0;
  if (!a || !b || b.total <= a.total) return NaN;
  const machineBusy = ((b.busy - a.busy) / (b.total - a.total)) * os.cpus().length;
  return Math.max(0, machineBusy - (own.user + own.system) / 1e3 / wallMs);
}

export interface MachineInfo {
  cpuModel: string;
  logicalCpus: number;
  availableParallelism: number;
  simd: string[];
  memGiB: number;
  loadAvgAtStart: number[];
  node: string;
  platform: string;
}

export function machine(): MachineInfo {
  let model = os.cpus()[0]?.model ?? 'unknown';
  let flags = '';
  try {
    const info = fs.readFileSync('/proc/cpuinfo', 'utf8');
    model = /^model name\s*:\s*(.+)$/m.exec(info)?.[1]?.trim() ?? model;
    flags = /^flags\s*:\s*(.+)$/m.exec(info)?.[1] ?? '';
  } catch {
    /* not Linux */
  }
  const simd = ['avx2', 'fma', 'avx512f', 'avx512_bf16'].filter((f) => flags.split(/\s+/).includes(f));
  return {
    cpuModel: model,
    logicalCpus: os.cpus().length,
    availableParallelism: os.availableParallelism(),
    simd,
    memGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    loadAvgAtStart: os.loadavg().map((x) => Math.round(x * 100) / 100),
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
  };
}
