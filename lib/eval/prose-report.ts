/**
 * The prose experiment's readable outputs: a Markdown table (held-out perplexity per bucket, bits
 * per byte, memorisation) and a self-contained HTML report with the facts demo's charts
 * (perplexity per bucket; training loss) drawn by lib/eval/svg.ts.
 */
import type { ProseDemoResults } from './prose-demo.js';
import type { PerplexityStats } from './perplexity.js';
import { esc, smooth } from './report.js';
import { barChartSvg, lineChartSvg } from './svg.js';

const num = (n: number) => n.toLocaleString('en-US');
/** 12637 → "12.6k" (bar labels must fit a fifth of the chart). */
const kilo = (n: number) => (n >= 1000 ? `${(n / 1000).toFixed(1)}k` : `${n}`);
const ppl = (s: PerplexityStats | undefined) => (s && s.tokens ? s.perplexity.toFixed(2) : '–');
const bpb = (s: PerplexityStats | undefined) => (s && s.tokens ? s.bitsPerByte.toFixed(3) : '–');
/** Relative change of perplexity against the anchor's, in %. */
const gain = (s: PerplexityStats, base: PerplexityStats) => (s.tokens && base.tokens ? `${(100 * (s.perplexity / base.perplexity - 1)).toFixed(1)}%` : '–');

/** One row per model (and the blocked control): held-out perplexity per bucket, the two rarest pooled, overall, bits per byte, memorisation. */
export function proseResultsTable(r: ProseDemoResults): string {
  const names = r.corpus.buckets.map((b) => b.name);
  const anchor = r.models.find((m) => m.name === 'anchor')!;
  const head = `| model | anchor params | fetched | bank | ${names.map((n) => {
    const b = r.corpus.buckets.find((x) => x.name === n)!;
    return `${n} (${b.heldOut} docs)`;
  }).join(' | ')} | B4+B5 | vs anchor | all | bits/byte | train B4+B5 | vs anchor | train s |`;
  const sep = `|${'---|'.repeat(names.length + 11)}`;
  const rows = r.models.map((m) => `| ${m.name} | ${num(m.params.anchor)} | ${num(m.params.fetched)} | ${num(m.params.bank)} | ${
    names.map((n) => ppl(m.perplexity.buckets.find((b) => b.name === n))).join(' | ')} | ${ppl(m.perplexity.rare)} | ${gain(m.perplexity.rare, anchor.perplexity.rare)} | ${
    ppl(m.perplexity.overall)} | ${bpb(m.perplexity.overall)} | ${ppl(m.memorisation.rare)} | ${gain(m.memorisation.rare, anchor.memorisation.rare)} | ${m.trainSeconds.toFixed(0)} |`);
  const bl = r.blocked.perplexity;
  rows.push(`| fetched, level-1 subtree blocked | | | | ${names.map((n) => ppl(bl.buckets.find((b) => b.name === n))).join(' | ')} | ${ppl(bl.rare)} | ${
    gain(bl.rare, anchor.perplexity.rare)} | ${ppl(bl.overall)} | ${bpb(bl.overall)} | | | |`);
  return [head, sep, ...rows].join('\n');
}

export function proseReportHtml(r: ProseDemoResults): string {
  const loss = lineChartSvg(`Training loss (pretraining, then continuation; nats per ${r.tokenizer.kind === 'bpe' ? 'BPE' : 'byte'} token)`, 'step', 'loss (nats/token)',
    r.models.map((m) => ({ name: m.name, x: m.losses.steps, y: smooth(m.losses.losses, 9) })));
  const series = [...r.models.map((m) => ({ name: m.name, s: m.perplexity })), { name: 'fetched, blocked', s: r.blocked.perplexity }];
  const top = Math.max(1, ...series.flatMap((x) => x.s.buckets.filter((b) => b.tokens).map((b) => b.perplexity)));
  const yMax = Math.ceil((top * 1.05) / 10) * 10;
  const groups = r.corpus.buckets.map((b) => ({
    label: `${b.name} (${kilo(b.minFreq)}–${kilo(b.maxFreq)})`,
    values: series.map((x) => ({ name: x.name, value: x.s.buckets.find((y) => y.name === b.name)?.perplexity ?? 0 })),
  }));
  const bars = barChartSvg('Held-out perplexity per bucket (training tokens per leaf; lower is better)', 'perplexity', groups, yMax);
  const table = proseResultsTable(r).split('\n').filter((l) => !/^\|-/.test(l)).map((l, i) => {
    const cells = l.split('|').slice(1, -1).map((c) => c.trim());
    const tag = i === 0 ? 'th' : 'td';
    return `<tr>${cells.map((c) => `<${tag}>${esc(c)}</${tag}>`).join('')}</tr>`;
  }).join('\n');
  const src = r.corpus.sources.map((s) => `${s.source}: ${num(s.train)} training + ${num(s.heldOut)} held-out documents (${num(s.bytes)} bytes, ${s.groups} topics)`).join('; ');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>hiermem demo prose</title>
<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f4f4f4}td:first-child{text-align:left}</style>
</head><body>
<h1>hiermem: natural prose with and without hierarchical memories</h1>
<p>Corpus: ${src}. Tokenizer: ${r.tokenizer.kind === 'bpe' ? `byte-level BPE of ${num(r.tokenizer.vocabSize)} tokens trained on the training split` : 'bytes'}${r.tokenizer.note ? ` (${esc(r.tokenizer.note)})` : ''};
${num(r.corpus.tokens)} training tokens, ${num(r.corpus.heldOutTokens)} held-out tokens.
Retriever: hierarchical k-means (k = ${r.routing.k}, p = ${r.routing.p}) on the training documents; each held-out document is routed by its own text, and ${(100 * r.routing.accuracy).toFixed(1)}% of them reach a leaf whose training documents are mostly of their own genre or WordNet topic.
Seed ${r.seed}${r.quick ? ', quick run' : ''}; ${r.seconds.toFixed(0)} s on ${esc(r.machine)}.</p>
<h2>Held-out perplexity per bucket</h2>
<p>Buckets group documents by how much training text their leaf holds (each about a fifth of it); "vs anchor": change of perplexity against the anchor; "train B4+B5": perplexity of the training documents of the two rarest buckets (memorisation).</p>
<table>${table}</table>
${bars}
<h2>Training loss</h2>
${loss}
<p>anchor: the anchor alone, trained further; generic: anchor + one generic memory of the fetched size; fetched: anchor + hierarchical FFN memories, path retrieved from the document;
dense2x: a dense model with about twice the anchor's parameters trained on all the tokens. Blocked: the fetched model with each held-out document's level-1 subtree routed around.</p>
</body></html>
`;
}
