/**
 * Reader and writer for the safetensors format:
 *   [u64 little-endian N][N bytes of JSON header][data section]
 * The header maps tensor name → {dtype, shape, data_offsets: [begin, end]} (offsets relative to the
 * start of the data section), plus an optional "__metadata__": {string: string}.
 *
 * The public surface, one import for callers; the code is split by responsibility:
 * safetensors-format.ts (dtypes, types, size arithmetic), safetensors-read.ts (validating reader),
 * safetensors-write.ts (atomic writer).
 */
export {
  MAX_HEADER_BYTES, isSafetensorsDtype, dtypeByteSize,
  type SafetensorsDtype, type TensorData, type TensorToWrite, type TensorInfo, type SafetensorsHeader, type LoadedTensor,
  type SafetensorsContents, type TensorExpectation, type ReadSafetensorsOptions,
} from './safetensors-format.js';
export { readSafetensorsHeader, readSafetensors, metadataJson } from './safetensors-read.js';
export { writeSafetensors, createSafetensorsFile, removeStaleTempFiles, type TensorLayout } from './safetensors-write.js';
