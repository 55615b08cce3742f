import { test } from 'node:test';
import assert from 'node:assert/strict';
import { nearestCentroid, sphericalKMeans } from '../lib/retrieval/kmeans.js';
import { normalizeRows } from '../lib/retrieval/common.js';
import { Rng } from '../lib/util/random.js';

/** n unit vectors of width dim around `centers` blob centres (spread `noise`), and each one's blob. */
function blobs(seed: number, n: number, dim: number, centers: number, noise: number): { x: Float32Array; label: Int32Array } {
  const rng = new Rng(seed);
  const c = Array.from({ length: centers }, () => Array.from({ length: dim }, () => rng.normal()));
  const x = new Float32Array(n * dim);
  const label = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    label[i] = i % centers;
    for (let j = 0; j < dim; j++) x[i * dim + j] = c[label[i]!]![j]! + noise * rng.normal();
  }
  normalizeRows(x, n, dim);
  return { x, label };
}

const all = (n: number): Int32Array => Int32Array.from({ length: n }, (_, i) => i);

function routeCounts(cents: Float32Array, k: number, dim: number, x: Float32Array, rows: Int32Array): number[] {
  const counts = new Array<number>(k).fill(0);
  for (const r of rows) counts[nearestCentroid(cents, 0, k, dim, x, r * dim)]!++;
  return counts;
}

test('nearestCentroid: largest dot product, ties to the lowest index', () => {
  const c = Float32Array.from([1, 0, 0, 1, 0, 1]); // centroids (1,0), (0,1), (0,1)
  assert.equal(nearestCentroid(c, 0, 3, 2, Float32Array.from([0.9, 0.1]), 0), 0);
  assert.equal(nearestCentroid(c, 0, 3, 2, Float32Array.from([0.1, 0.9]), 0), 1); // tie between 1 and 2
  assert.equal(nearestCentroid(c, 0, 3, 2, Float32Array.from([0, 0]), 0), 0); // zero vector
  assert.equal(nearestCentroid(c, 1, 2, 2, Float32Array.from([9, 0.1, 0.9]), 1), 0); // offsets
  // exclude: the best of the others.
  assert.equal(nearestCentroid(c, 0, 3, 2, Float32Array.from([0.9, 0.1]), 0, 0), 1);
  assert.equal(nearestCentroid(c, 0, 3, 2, Float32Array.from([0.1, 0.9]), 0, 1), 2);
  assert.equal(nearestCentroid(c, 0, 3, 2, Float32Array.from([0, 0]), 0, 0), 1);
});

test('sphericalKMeans: unit centroids, deterministic per seed, recovers separated blobs', () => {
  const dim = 16;
  const { x, label } = blobs(1, 400, dim, 4, 0.2);
  const fit = (seed: number): Float32Array => sphericalKMeans(x, dim, all(400), { k: 4, rng: new Rng(seed) });
  const a = fit(7);
  assert.deepEqual(a, fit(7));
  assert.notDeepEqual(a, fit(8));
  for (let c = 0; c < 4; c++) {
    let s = 0;
    for (let j = 0; j < dim; j++) s += a[c * dim + j]! ** 2;
    assert.ok(Math.abs(s - 1) < 1e-5, `centroid ${c} norm² ${s}`);
  }
  // Each blob lands in one cluster and the clusters are distinct.
  const clusterOfBlob = new Map<number, Set<number>>();
  for (let i = 0; i < 400; i++) {
    const c = nearestCentroid(a, 0, 4, dim, x, i * dim);
    if (!clusterOfBlob.has(label[i]!)) clusterOfBlob.set(label[i]!, new Set());
    clusterOfBlob.get(label[i]!)!.add(c);
  }
  const owners = [...clusterOfBlob.values()].map((s) => [...s]);
  assert.ok(owners.every((o) => o.length === 1), JSON.stringify(owners));
  assert.equal(new Set(owners.map((o) => o[0])).size, 4);
});

test('sphericalKMeans: balancing splits an oversized blob (bound 1.5·n/k during fitting, routed within 2·n/k)', () => {
  // Two tight blobs, 90% / 10% of the points, k = 4: unbalanced k-means would give the big blob one
  // or two clusters; the paper's rule forces every cluster to ~n/k.
  const dim = 8;
  const rng = new Rng(3);
  const n = 800;
  const a = Array.from({ length: dim }, () => rng.normal());
  const b = Array.from({ length: dim }, () => rng.normal());
  const x = new Float32Array(n * dim);
  for (let i = 0; i < n; i++) for (let j = 0; j < dim; j++) x[i * dim + j] = (i < 720 ? a : b)[j]! + 0.3 * rng.normal();
  normalizeRows(x, n, dim);
  const cents = sphericalKMeans(x, dim, all(n), { k: 4, rng: new Rng(1) });
  const counts = routeCounts(cents, 4, dim, x, all(n));
  assert.ok(Math.max(...counts) <= (2 * n) / 4, `routed sizes ${counts}`);
  assert.ok(Math.min(...counts) > 0, `routed sizes ${counts}`);
  // Without balancing the small blob keeps a cluster of its own and the big one is split unevenly.
  const free = routeCounts(sphericalKMeans(x, dim, all(n), { k: 4, rng: new Rng(1), balanceFactor: Infinity }), 4, dim, x, all(n));
  assert.ok(Math.max(...free) > Math.max(...counts), `balanced ${counts} vs free ${free}`);
});

test('sphericalKMeans: fewer distinct vectors than k → exact copies that routing never picks', () => {
  const dim = 4;
  // 5 vectors, only 2 distinct directions.
  const x = Float32Array.from([1, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0]);
  const cents = sphericalKMeans(x, dim, all(5), { k: 4, rng: new Rng(0) });
  const rows = [0, 1, 2, 3].map((c) => Array.from(cents.subarray(c * dim, c * dim + dim)));
  assert.notDeepEqual(rows[0], rows[1]);
  assert.deepEqual(rows[2], rows[0]); // child 2 copies child 0
  assert.deepEqual(rows[3], rows[1]); // child 3 copies child 1
  const counts = routeCounts(cents, 4, dim, x, all(5));
  assert.deepEqual(counts.slice(2), [0, 0]);
  // Any query at all prefers the original over its copy.
  const rng = new Rng(5);
  for (let t = 0; t < 200; t++) {
    const q = Float32Array.from({ length: dim }, () => rng.normal());
    assert.ok(nearestCentroid(cents, 0, 4, dim, q, 0) < 2);
  }
  // A single vector: one real centroid, k - 1 copies.
  const one = sphericalKMeans(Float32Array.from([0, 0, 1, 0]), dim, all(1), { k: 3, rng: new Rng(0) });
  assert.deepEqual(Array.from(one), [0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0]);
});

test('sphericalKMeans: small and degenerate nodes always terminate with finite centroids', () => {
  // Regression: a balancing limit below ceil(n/k) used to swap two clusters forever (n = 5, k = 4).
  const dim = 6;
  for (let n = 1; n <= 13; n++) {
    const { x } = blobs(n, n, dim, 3, 0.5);
    for (let k = 2; k <= 8; k++) {
      for (let seed = 0; seed < 3; seed++) {
        const c = sphericalKMeans(x, dim, all(n), { k, rng: new Rng(seed) });
        assert.equal(c.length, k * dim);
        assert.ok(c.every(Number.isFinite), `n=${n} k=${k} seed=${seed}`);
        if (n >= k) {
          const counts = routeCounts(c, k, dim, x, all(n));
          assert.ok(Math.min(...counts) > 0, `n=${n} k=${k} seed=${seed}: a child routes nothing ${counts}`);
        }
      }
    }
  }
  // Zero vectors and exact duplicates.
  const z = new Float32Array(4 * 3);
  z.set([1, 0, 0], 3);
  const c = sphericalKMeans(z, 3, all(4), { k: 3, rng: new Rng(0) });
  assert.ok(c.every(Number.isFinite));
});

test('sphericalKMeans: uses only the given rows', () => {
  const dim = 4;
  const { x } = blobs(2, 50, dim, 2, 0.1);
  const rows = Int32Array.from([3, 7, 11, 20, 31, 42]);
  const a = sphericalKMeans(x, dim, rows, { k: 2, rng: new Rng(1) });
  const sub = new Float32Array(rows.length * dim);
  rows.forEach((r, i) => sub.set(x.subarray(r * dim, r * dim + dim), i * dim));
  assert.deepEqual(a, sphericalKMeans(sub, dim, all(rows.length), { k: 2, rng: new Rng(1) }));
});
