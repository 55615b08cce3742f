/**
 * The rows of bench/results/latest.json — a stable contract read by checks outside our tests
 * (issue #5): extend with new fields, never rename. A row compares ours with a peer in the same
 * run (ratio = ours / peerValue, both "higher is better" unless the unit says ms) or, without a
 * peer, carries fractionOfLimit against one of the machine limits measured in the same run.
 */
export interface ContractRow {
  name: string;
  unit: string;
  ours: number;
  /** 'pytorch-cpu', 'pytorch-cpu-kvcache', 'hiermem-…' (our own other path), or null. */
  peer: string | null;
  peerValue: number | null;
  ratio: number | null;
  /** The goal for `ratio` (peer rows) or `fractionOfLimit` (limit rows); null = no goal set. */
  target: number | null;
  met: boolean | null;
  /**
   * ours / the machine limit named by `limit` (peerless rows; train and GEMM rows also carry it:
   * FLOP/s / the FMA peak).
   */
  fractionOfLimit?: number;
  /**
   * fmaPeakGflops: the fp32 FMA peak (issue #12, the FLOP/s ceiling); gemmAtModelShapes: our GEMM at
   * the model's own shapes; memcpyGBs: memcpy bandwidth. Values of older runs, still readable:
   * sgemmGflops / sgemmAtModelShapes (OpenBLAS sgemm, before the addon had its own GEMM).
   */
  limit?: 'fmaPeakGflops' | 'gemmAtModelShapes' | 'sgemmGflops' | 'memcpyGBs' | 'sgemmAtModelShapes';
  /** (max - min) / median of ours over the repetitions. */
  spread?: number;
  /** Flat rows: met means |ratio - 1| <= 1 - target (within ±5% for target 0.95). */
  band?: boolean;
  /** Rows whose target bounds `ours` from above (prebuild-size: met means ours <= target). */
  upperBound?: boolean;
  /** Rows whose target bounds `ours` from below, peerless and limitless (data rows: met means ours >= target). */
  lowerBound?: boolean;
  note?: string;
}

export interface Limits {
  /** fp32 FMA peak, GFLOP/s: a register-bound FMA loop on every thread (bench/limits.ts). */
  fmaPeakGflops: number;
  /** Our own GEMM at a large square product (1536³; 768³ with --quick), GFLOP/s. */
  gemmGflops: number;
  /** The same value under its old name (it was OpenBLAS sgemm before the addon had its own GEMM). */
  sgemmGflops: number;
  memcpyGBs: number;
}

export function peerRow(name: string, unit: string, ours: number, peer: string | null, peerValue: number | null,
                        target: number | null, extra: Partial<ContractRow> = {}): ContractRow {
  const ratio = peerValue !== null && peerValue > 0 ? ours / peerValue : null;
  let met: boolean | null = null;
  if (target !== null && ratio !== null) met = extra.band ? Math.abs(ratio - 1) <= 1 - target + 1e-12 : ratio >= target;
  return { name, unit, ours, peer: peerValue !== null ? peer : null, peerValue, ratio, target, met, ...extra };
}

export function limitRow(name: string, unit: string, ours: number, limit: ContractRow['limit'] & string, limitValue: number,
                         target: number | null, extra: Partial<ContractRow> = {}): ContractRow {
  const fractionOfLimit = ours / limitValue;
  return { name, unit, ours, peer: null, peerValue: null, ratio: null, target, met: target !== null ? fractionOfLimit >= target : null, fractionOfLimit, limit, ...extra };
}
