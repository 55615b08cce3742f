/**
 * Parquet (what Hugging Face datasets ship), read with hyparquet one row group at a time, and only
 * the text column, so memory holds one row group's strings whatever the file's size. A null or
 * non-string value is a bad record (its 0-based row); empty strings are not documents.
 */
import { asyncBufferFromFile, parquetMetadataAsync, parquetReadObjects, type FileMetaData } from 'hyparquet';
import { HiermemError } from '../../errors.js';
import type { FileReader } from './types.js';

export const readParquetFile: FileReader = async function* (file, o) {
  let metadata: FileMetaData;
  let buffer;
  try {
    buffer = await asyncBufferFromFile(file);
    metadata = await parquetMetadataAsync(buffer);
  } catch (err) {
    throw new HiermemError('E_IO', `cannot read ${file} as Parquet: ${(err as Error).message}`, { cause: err });
  }
  const columns = metadata.schema.slice(1).map((s) => s.name);
  if (!columns.includes(o.field)) {
    throw new HiermemError('E_INVALID_ARGUMENT', `${file}: no column ${JSON.stringify(o.field)} (columns: ${columns.join(', ')}); name the text column with --field`);
  }
  const perRowByte = buffer.byteLength / Math.max(1, Number(metadata.num_rows));
  let rowStart = 0;
  for (const group of metadata.row_groups) {
    const rows = Number(group.num_rows);
    const rowEnd = rowStart + rows;
    let values: unknown[];
    try {
      const objs = await parquetReadObjects({ file: buffer, metadata, columns: [o.field], rowStart, rowEnd });
      values = objs.map((r) => r[o.field]);
    } catch (err) {
      throw new HiermemError('E_IO', `cannot read ${file} rows ${rowStart}..${rowEnd - 1}: ${(err as Error).message}`, { cause: err });
    }
    if (values.length !== rows) {
      throw new HiermemError('E_IO', `${file}: row group at row ${rowStart} holds ${values.length} rows, its metadata says ${rows}`);
    }
    o.stats.bytesRead += rows * perRowByte;
    for (let i = 0; i < rows; i++) {
      const v = values[i];
      const row = rowStart + i;
      if (typeof v !== 'string') {
        o.bad({ source: file, line: row, unit: 'row', reason: `${v === null || v === undefined ? 'null' : 'non-string'} value in column ${JSON.stringify(o.field)}` });
      } else if (v.length > 0) {
        yield { text: v, source: file, line: row };
      }
    }
    rowStart = rowEnd;
  }
};
