/**
 * Child process of trainByteLevelBpe: trains a byte-level BPE with Hugging Face's Rust tokenizers
 * (the `tokenizers` napi package) on one text file and saves the raw tokenizer.json.
 * A separate process because the native trainer prints its progress to fd 1, which must stay
 * clean for `--json` output; and a native failure cannot take the CLI down with it.
 * argv: <corpus.txt> <out.json>. Exit 0 on success; otherwise the reason on stderr.
 */
// `tokenizers` is an optional dependency (a 64 MB native package used only here; installed by
// default, skipped where no prebuilt binary exists): loaded on demand, and its absence reported
// with exit code 3 so the parent can say what to install.
let tokenizers: typeof import('tokenizers');
try {
  tokenizers = (await import('tokenizers')).default;
} catch (e) {
  process.stderr.write(`cannot load the optional package "tokenizers": ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(3);
}

const [corpus, out] = process.argv.slice(2);
if (!corpus || !out) {
  process.stderr.write('usage: hf-tokenizer-train-child <corpus.txt> <out.json>\n');
  process.exit(2);
}
try {
  const t = new tokenizers.Tokenizer(tokenizers.BPE.empty());
  // GPT-2's pre-tokenizer (regex split, bytes as printable characters), no prefix space, so a
  // decoded text is byte-for-byte the encoded one.
  t.setPreTokenizer(tokenizers.byteLevelPreTokenizer(false, true));
  // The JS binding exposes only the default trainer (vocab 30,000); the caller keeps the first merges.
  t.train([corpus]);
  t.save(out, false);
} catch (e) {
  process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
}
