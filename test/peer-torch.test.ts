/**
 * hiermem and a plain PyTorch implementation of the same model (bench/peers/torch_model.py)
 * compute the same loss (rel < 1e-5) and the same gradients (max-norm relative < 1e-3) from the
 * same weights: anchor, anchor with packed documents, anchor + FFN memories (incl. the gradient of
 * the fetched blocks, and a batch where one sequence has no memory). Skipped where
 * `/usr/bin/python3 -c "import torch"` fails (CI has no PyTorch).
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TorchPeer, torchImportable } from '../bench/peer-common.js';
import { GRAD_TOL, LOSS_TOL, describe, standardChecks } from '../bench/peer-check.js';

const noTorch = torchImportable() ? false : 'PyTorch is not importable from /usr/bin/python3 (apt-get install python3-torch)';

test('PyTorch peer: same loss and gradients as hiermem (anchor, packed documents, memories)', { skip: noTorch, timeout: 120_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'hiermem-peer-test-'));
  const { peer } = await TorchPeer.start(1);
  after(() => {
    peer.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const results = await standardChecks(peer, dir);
  assert.equal(results.length, 4);
  for (const r of results) {
    const msg = describe(r);
    assert.ok(r.lossRel < LOSS_TOL, msg);
    assert.ok(r.worstGrad.rel < GRAD_TOL, msg);
    if (r.label.startsWith('memory')) {
      assert.ok(r.fetchedGrad && r.fetchedGrad.rel < GRAD_TOL, msg);
      // the memories matter: the loss differs from the anchor's alone
      assert.ok(r.lossWithoutMemory !== undefined && Math.abs(r.lossWithoutMemory - r.lossOurs) > 1e-4, msg);
    } else {
      assert.ok(r.stepRelL2 !== undefined && r.stepRelL2 < 1e-2, msg);
    }
  }
});
