/** Learning-rate schedule: linear warmup, then cosine decay to minLr (paper: cosine with warmup). */
export interface ScheduleOptions {
  maxLr: number;
  minLr: number;
  warmupSteps: number;
  totalSteps: number;
}

/** LR for 0-based step `step`. */
export function cosineLr(step: number, o: ScheduleOptions): number {
  if (o.warmupSteps > 0 && step < o.warmupSteps) return (o.maxLr * (step + 1)) / o.warmupSteps;
  const span = Math.max(1, o.totalSteps - o.warmupSteps);
  const t = Math.min(1, Math.max(0, (step - o.warmupSteps) / span));
  return o.minLr + 0.5 * (o.maxLr - o.minLr) * (1 + Math.cos(Math.PI * t));
}
