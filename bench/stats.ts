/** Timing helpers for the benchmarks: warm-up, repetitions, median and spread. */
export interface Timing {
  medianMs: number;
  minMs: number;
  maxMs: number;
  reps: number;
}

export async function time(fn: () => unknown | Promise<unknown>, reps = 7, warmup = 2): Promise<Timing> {
  for (let i = 0; i < warmup; i++) await fn();
  const ms: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    await fn();
    ms.push(performance.now() - t0);
  }
  ms.sort((a, b) => a - b);
  return { medianMs: ms[Math.floor(ms.length / 2)]!, minMs: ms[0]!, maxMs: ms[ms.length - 1]!, reps };
}

/** Times two functions alternately (A B A B ...) so drift on a shared machine hits both alike. */
export async function timePair(a: () => unknown | Promise<unknown>, b: () => unknown | Promise<unknown>, reps = 7, warmup = 2): Promise<[Timing, Timing]> {
  for (let i = 0; i < warmup; i++) { await a(); await b(); }
  const ta: number[] = [], tb: number[] = [];
  for (let i = 0; i < reps; i++) {
    let t0 = performance.now();
    await a();
    ta.push(performance.now() - t0);
    t0 = performance.now();
    await b();
    tb.push(performance.now() - t0);
  }
  const stat = (ms: number[]): Timing => {
    ms.sort((x, y) => x - y);
    return { medianMs: ms[Math.floor(ms.length / 2)]!, minMs: ms[0]!, maxMs: ms[ms.length - 1]!, reps };
  };
  return [stat(ta), stat(tb)];
}

export function spread(t: Timing): string {
  return `${t.medianMs.toFixed(2)} ms (${t.minMs.toFixed(2)}–${t.maxMs.toFixed(2)})`;
}
