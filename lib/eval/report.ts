/**
 * The demo's human-readable outputs: a Markdown/plain table for the terminal and a self-contained
 * HTML report with SVG charts (training-loss curves, accuracy per frequency bucket per model).
 */
import type { DemoResults } from './demo.js';
import { barChartSvg, lineChartSvg } from './svg.js';

const pct = (x: number) => `${(100 * x).toFixed(1)}`;
const num = (n: number) => n.toLocaleString('en-US');

/** One row per model (and the blocked check), one column per bucket, accuracy in %. */
export function resultsTable(r: DemoResults): string {
  const names = r.corpus.buckets.map((b) => b.name);
  const head = `| model | anchor params | fetched | bank | ${names.map((n) => {
    const b = r.corpus.buckets.find((x) => x.name === n)!;
    return `${n} (${b.minFreq === b.maxFreq ? b.minFreq : `${b.minFreq}–${b.maxFreq}`} docs)`;
  }).join(' | ')} | 3 rarest | all | train s |`;
  const sep = `|${'---|'.repeat(names.length + 7)}`;
  const rows = r.models.map((m) => `| ${m.name} | ${num(m.params.anchor)} | ${num(m.params.fetched)} | ${num(m.params.bank)} | ${
    names.map((n) => pct(m.buckets.find((b) => b.name === n)?.accuracy ?? 0)).join(' | ')} | ${pct(m.rare)} | ${pct(m.overall)} | ${m.trainSeconds.toFixed(0)} |`);
  rows.push(`| fetched, level-1 subtree blocked | | | | ${names.map((n) => pct(r.blocked.buckets.find((b) => b.name === n)?.accuracy ?? 0)).join(' | ')} | ${pct(r.blocked.rare)} | ${pct(r.blocked.overall)} | |`);
  return [head, sep, ...rows].join('\n');
}

export function reportHtml(r: DemoResults): string {
  const loss = lineChartSvg('Training loss (pretraining, then continuation)', 'step', 'loss (nats/token)',
    r.models.map((m) => ({ name: m.name, x: m.losses.steps, y: smooth(m.losses.losses, 9) })));
  const groups = r.corpus.buckets.map((b) => ({
    label: `${b.name} (${b.minFreq === b.maxFreq ? b.minFreq : `${b.minFreq}–${b.maxFreq}`})`,
    values: [...r.models.map((m) => ({ name: m.name, value: m.buckets.find((x) => x.name === b.name)?.accuracy ?? 0 })),
      { name: 'fetched, blocked', value: r.blocked.buckets.find((x) => x.name === b.name)?.accuracy ?? 0 }],
  }));
  const bars = barChartSvg('Fact-probe accuracy per frequency bucket (B1 most frequent)', 'exact-match accuracy', groups);
  const table = resultsTable(r).split('\n').filter((l) => !/^\|-/.test(l)).map((l, i) => {
    const cells = l.split('|').slice(1, -1).map((c) => c.trim());
    const tag = i === 0 ? 'th' : 'td';
    return `<tr>${cells.map((c) => `<${tag}>${esc(c)}</${tag}>`).join('')}</tr>`;
  }).join('\n');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>hiermem demo</title>
<style>body{font-family:sans-serif;max-width:960px;margin:2em auto;color:#222}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f4f4f4}td:first-child{text-align:left}</style>
</head><body>
<h1>hiermem: long-tail facts with and without hierarchical memories</h1>
<p>Corpus: ${num(r.corpus.documents)} documents, ${num(r.corpus.tokens)} byte tokens, ${num(r.corpus.probes)} probes.
Retriever: hierarchical k-means (k = ${r.routing.k}, p = ${r.routing.p}); ${pct(r.routing.accuracy)}% of probes are routed to the leaf holding most of their entity's documents.
Seed ${r.seed}${r.quick ? ', quick run' : ''}; ${r.seconds.toFixed(0)} s on ${esc(r.machine)}.</p>
<h2>Accuracy per frequency bucket (%)</h2>
<table>${table}</table>
${bars}
<h2>Training loss</h2>
${loss}
<p>anchor: the anchor alone, trained further; generic: anchor + one generic memory of the fetched size; fetched: anchor + hierarchical FFN memories, path retrieved from the prompt;
dense2x: a dense model with about twice the anchor's parameters trained on all the tokens. Blocked: the fetched model with each prompt's level-1 subtree routed around.</p>
</body></html>
`;
}

/** Text for HTML: the four characters that could break out of an element or attribute, escaped. */
export function esc(s: string): string {
  return s.replace(/[<>&"]/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;' })[c]!);
}

/** Trailing moving average over w points (loss curves). */
export function smooth(y: number[], w: number): number[] {
  return y.map((_, i) => {
    const a = Math.max(0, i - w + 1);
    const s = y.slice(a, i + 1);
    return s.reduce((p, q) => p + q, 0) / s.length;
  });
}
