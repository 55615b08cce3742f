import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as hiermem from '../lib/index.js';

test('the package entry point exports the public API', () => {
  for (const name of ['AnchorModel', 'AdamW', 'ByteTokenizer', 'WindowSampler', 'saveCheckpoint', 'loadCheckpoint', 'MemoryBank',
    'HierarchicalModel', 'resolveMemorySpec', 'memorySizes', 'RetrievalTree', 'HashedTfidfEmbedder', 'packByLeaf', 'PathBatchSampler',
    'trainLoop', 'memoryStepper', 'scoreProbes', 'runDemo', 'HiermemError', 'loadNative']) {
    assert.ok(name in hiermem, `missing export ${name}`);
  }
  assert.equal(hiermem.loadNative().blas, 'none (own gemm)');
});
