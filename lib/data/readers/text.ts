/**
 * Plain text: documents are paragraphs separated by blank lines ('text'), or single non-blank
 * lines ('lines'), with the same trimming as splitTextDocuments. Text has no bad records.
 */
import { readFileLines } from './lines.js';
import type { CorpusDocument, FileReader } from './types.js';

export const readTextFile: FileReader = async function* (file, o) {
  const perLine = o.format === 'lines';
  let lineNo = 0;
  let current: string[] = [];
  let firstLine = 0;
  const flush = (): CorpusDocument | null => {
    const doc = current.length > 0 ? { text: current.join('\n').trim(), source: file, line: firstLine } : null;
    current = [];
    return doc;
  };
  for await (const line of readFileLines(file, o.stats)) {
    lineNo++;
    const blank = line.trim() === '';
    if (perLine) {
      if (!blank) yield { text: line, source: file, line: lineNo };
    } else if (blank) {
      const doc = flush();
      if (doc) yield doc;
    } else {
      if (current.length === 0) firstLine = lineNo;
      current.push(line);
    }
  }
  const doc = flush();
  if (doc) yield doc;
};
