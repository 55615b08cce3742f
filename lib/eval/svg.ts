/**
 * A dependency-free SVG line chart (loss curves): several series over a shared x axis.
 */
export interface Series {
  name: string;
  x: number[];
  y: number[];
  color?: string;
}

const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b'];

function esc(s: string): string {
  return s.replace(/[<>&"]/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;' })[c]!);
}

function niceTicks(lo: number, hi: number, n = 5): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / n;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? raw;
  const out: number[] = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + 1e-12; t += step) out.push(Number(t.toPrecision(12)));
  return out;
}

export function lineChartSvg(title: string, xLabel: string, yLabel: string, series: Series[], width = 720, height = 420): string {
  const m = { l: 64, r: 16, t: 36, b: 48 };
  const pts = series.flatMap((s) => s.x.map((x, i) => [x, s.y[i]!] as const)).filter(([, y]) => Number.isFinite(y));
  const xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1]);
  const x0 = Math.min(...xs, 0), x1 = Math.max(...xs, 1);
  let y0 = Math.min(...ys), y1 = Math.max(...ys);
  if (!Number.isFinite(y0)) { y0 = 0; y1 = 1; }
  if (y1 - y0 < 1e-9) { y0 -= 0.5; y1 += 0.5; }
  const W = width - m.l - m.r, H = height - m.t - m.b;
  const sx = (x: number) => m.l + ((x - x0) / (x1 - x0 || 1)) * W;
  const sy = (y: number) => m.t + H - ((y - y0) / (y1 - y0)) * H;
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="12">`);
  parts.push(`<rect width="100%" height="100%" fill="white"/>`);
  parts.push(`<text x="${width / 2}" y="20" text-anchor="middle" font-size="15">${esc(title)}</text>`);
  for (const t of niceTicks(y0, y1)) {
    parts.push(`<line x1="${m.l}" x2="${m.l + W}" y1="${sy(t)}" y2="${sy(t)}" stroke="#eee"/>`);
    parts.push(`<text x="${m.l - 6}" y="${sy(t) + 4}" text-anchor="end">${t}</text>`);
  }
  for (const t of niceTicks(x0, x1)) {
    parts.push(`<text x="${sx(t)}" y="${m.t + H + 16}" text-anchor="middle">${t}</text>`);
  }
  parts.push(`<rect x="${m.l}" y="${m.t}" width="${W}" height="${H}" fill="none" stroke="#888"/>`);
  parts.push(`<text x="${m.l + W / 2}" y="${height - 10}" text-anchor="middle">${esc(xLabel)}</text>`);
  parts.push(`<text transform="translate(16 ${m.t + H / 2}) rotate(-90)" text-anchor="middle">${esc(yLabel)}</text>`);
  series.forEach((s, i) => {
    const color = s.color ?? PALETTE[i % PALETTE.length]!;
    const d = s.x
      .map((x, j) => [x, s.y[j]!] as const)
      .filter(([, y]) => Number.isFinite(y))
      .map(([x, y], j) => `${j ? 'L' : 'M'}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`)
      .join('');
    parts.push(`<path d="${d}" fill="none" stroke="${color}" stroke-width="1.6"/>`);
    parts.push(`<rect x="${m.l + W - 150}" y="${m.t + 8 + i * 18}" width="12" height="3" fill="${color}"/>`);
    parts.push(`<text x="${m.l + W - 132}" y="${m.t + 13 + i * 18}">${esc(s.name)}</text>`);
  });
  parts.push('</svg>');
  return parts.join('\n');
}

export interface BarGroup {
  label: string;
  values: Array<{ name: string; value: number }>;
}

/** Grouped bar chart (e.g. accuracy per frequency bucket, one bar per model), values in [0, yMax]. */
export function barChartSvg(title: string, yLabel: string, groups: BarGroup[], yMax = 1, width = 720, height = 420): string {
  const m = { l: 64, r: 16, t: 36, b: 64 };
  const W = width - m.l - m.r, H = height - m.t - m.b;
  const names = [...new Set(groups.flatMap((g) => g.values.map((v) => v.name)))];
  const gw = W / Math.max(1, groups.length), bw = (gw * 0.8) / Math.max(1, names.length);
  const sy = (y: number) => m.t + H - (Math.max(0, Math.min(yMax, y)) / yMax) * H;
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="12">`);
  parts.push(`<rect width="100%" height="100%" fill="white"/>`);
  parts.push(`<text x="${width / 2}" y="20" text-anchor="middle" font-size="15">${esc(title)}</text>`);
  for (const t of niceTicks(0, yMax)) {
    parts.push(`<line x1="${m.l}" x2="${m.l + W}" y1="${sy(t)}" y2="${sy(t)}" stroke="#eee"/>`);
    parts.push(`<text x="${m.l - 6}" y="${sy(t) + 4}" text-anchor="end">${t}</text>`);
  }
  groups.forEach((g, gi) => {
    const x0 = m.l + gi * gw + gw * 0.1;
    g.values.forEach((v) => {
      const i = names.indexOf(v.name);
      const color = PALETTE[i % PALETTE.length]!;
      const y = sy(v.value);
      parts.push(`<rect x="${(x0 + i * bw).toFixed(1)}" y="${y.toFixed(1)}" width="${(bw * 0.92).toFixed(1)}" height="${(m.t + H - y).toFixed(1)}" fill="${color}"><title>${esc(`${g.label} ${v.name}: ${v.value.toFixed(3)}`)}</title></rect>`);
    });
    parts.push(`<text x="${(x0 + gw * 0.4).toFixed(1)}" y="${m.t + H + 16}" text-anchor="middle">${esc(g.label)}</text>`);
  });
  parts.push(`<rect x="${m.l}" y="${m.t}" width="${W}" height="${H}" fill="none" stroke="#888"/>`);
  parts.push(`<text transform="translate(16 ${m.t + H / 2}) rotate(-90)" text-anchor="middle">${esc(yLabel)}</text>`);
  names.forEach((n, i) => {
    const x = m.l + i * 120;
    parts.push(`<rect x="${x}" y="${height - 22}" width="12" height="12" fill="${PALETTE[i % PALETTE.length]!}"/>`);
    parts.push(`<text x="${x + 16}" y="${height - 12}">${esc(n)}</text>`);
  });
  parts.push('</svg>');
  return parts.join('\n');
}
