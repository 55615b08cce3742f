/**
 * The one way every comparison in bench/ is timed: both sides in the same process window,
 * alternating (A B, B A, ...; three sides rotate), after a warm-up, with enough calls per
 * repetition to last `seconds`; per side the median and spread of the rate, its CPU share, and
 * the paired per-repetition ratios (drift on a shared machine hits both sides of a pair alike).
 */
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import { stat, type Stat } from './machine.js';
import type { IdleWaiter } from './peer-common.js';

/** Runs `n` units of work and reports the wall and CPU milliseconds it took. */
export type Runner = (n: number) => Promise<{ ms: number; cpuMs: number }>;

export interface Side {
  name: string;
  /** Per repetition: units of work (tokens) per second. */
  perSec: Stat;
  msPerCall: Stat;
  cpuShare: number;
}

export interface Measured {
  sides: Side[];
  callsPerRep: number;
  busyCoresBefore: number;
  loadAvg1: number;
  /** Per repetition ratio side0 / side_i (i >= 1), paired within the repetition. */
  paired: Stat[];
}

export async function ourRunner(fn: () => Promise<unknown> | unknown): Promise<Runner> {
  return async (n) => {
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    for (let i = 0; i < n; i++) await fn();
    const ms = performance.now() - t0;
    const c = process.cpuUsage(c0);
    return { ms, cpuMs: (c.user + c.system) / 1e3 };
  };
}

export interface Timing {
  reps: number;
  warmup: number;
  seconds: number;
}

export async function measure(what: string, units: number, sides: { name: string; run: Runner }[], threads: number, o: Timing, idle: IdleWaiter): Promise<Measured> {
  for (const s of sides) if (o.warmup > 0) await s.run(o.warmup);
  let slowest = 0;
  for (const s of sides) slowest = Math.max(slowest, (await s.run(1)).ms);
  const callsPerRep = Math.max(1, Math.round((o.seconds * 1000) / slowest));
  const busyCoresBefore = await idle.wait(what);
  const loadAvg1 = os.loadavg()[0]!;
  const per: { ms: number; cpuMs: number }[][] = sides.map(() => []);
  for (let r = 0; r < o.reps; r++) {
    // rotate the order each repetition: A B, B A, ... (A B C, B C A, C A B with three sides)
    for (let j = 0; j < sides.length; j++) {
      const i = (j + r) % sides.length;
      per[i]!.push(await sides[i]!.run(callsPerRep));
    }
  }
  const out: Side[] = sides.map((s, i) => {
    const reps = per[i]!;
    const wall = reps.reduce((a, b) => a + b.ms, 0);
    const cpu = reps.reduce((a, b) => a + b.cpuMs, 0);
    return {
      name: s.name,
      perSec: stat(reps.map((x) => (units * callsPerRep) / (x.ms / 1000))),
      msPerCall: stat(reps.map((x) => x.ms / callsPerRep)),
      cpuShare: cpu / (wall * threads),
    };
  });
  const paired = sides.slice(1).map((_, k) => stat(per[0]!.map((x, r) => per[k + 1]![r]!.ms / x.ms)));
  return { sides: out, callsPerRep, busyCoresBefore, loadAvg1, paired };
}
