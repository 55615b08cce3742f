/**
 * JSON Lines: the string `field` of each record is a document. Blank lines and empty strings are
 * not documents (as in readJsonlDocuments); a line that is not a JSON object with a string `field`
 * is a bad record.
 */
import { readFileLines } from './lines.js';
import type { FileReader } from './types.js';

export const readJsonlFile: FileReader = async function* (file, o) {
  let lineNo = 0;
  for await (const line of readFileLines(file, o.stats)) {
    lineNo++;
    if (line.trim() === '') continue;
    let record: unknown;
    try {
      record = JSON.parse(line);
    } catch (err) {
      o.bad({ source: file, line: lineNo, unit: 'line', reason: `not valid JSON (${(err as Error).message})` });
      continue;
    }
    if (typeof record !== 'object' || record === null || Array.isArray(record)) {
      o.bad({ source: file, line: lineNo, unit: 'line', reason: 'expected a JSON object' });
      continue;
    }
    const value = Object.prototype.hasOwnProperty.call(record, o.field) ? (record as Record<string, unknown>)[o.field] : undefined;
    if (typeof value !== 'string') {
      o.bad({ source: file, line: lineNo, unit: 'line', reason: `${value === undefined ? 'missing' : 'non-string'} field ${JSON.stringify(o.field)}` });
      continue;
    }
    if (value.length > 0) yield { text: value, source: file, line: lineNo };
  }
};
