/**
 * Balanced spherical k-means for one node of the retrieval tree (paper §3.2): k-means++ seeding from a
 * seeded Rng, a fixed number of Lloyd iterations on cosine similarity (centroids renormalised to unit
 * length), and at every assignment step the paper's balancing: while a cluster holds more than
 * `balanceFactor / k` of the assignments, the members of the largest and the smallest cluster are
 * pooled, shuffled and split evenly between the two (Jégou et al. 2010's trick).
 *
 * Fewer distinct vectors than k (tiny nodes, or duplicates): the m < k distinct seeds become the first
 * m centroids, and children m..k-1 get exact copies of centroid (c mod m). Routing breaks ties towards
 * the lowest index, so a copy can never win against its original: those children exist (every node
 * of the full k-ary tree has a centroid and a path is always complete) but no vector is ever routed
 * to them, at fit time or later. That is deliberate: their memory blocks would never be trained, and
 * a query sent there would get an untrained memory.
 */
import { HiermemError } from '../errors.js';
import { Rng } from '../util/random.js';
import { dotAt } from './common.js';

export interface KMeansOptions {
  /** Number of clusters (>= 1). */
  k: number;
  /** Source of every random choice (seeding, subsampling, balancing). */
  rng: Rng;
  /** Lloyd iterations after seeding (default 20, like the paper's 20 EM steps). */
  iterations?: number;
  /** A cluster holding more than balanceFactor·n/k vectors is split with the smallest (default 1.5; Infinity = off). */
  balanceFactor?: number;
}

/**
 * Index of the centroid (row of `centroids`, shape (k, dim), starting at row offset `cOff`) with the
 * largest dot product with x[xo .. xo+dim); ties go to the lowest index. This is the one routing
 * decision used at fit time and at inference. `exclude` (a centroid index) is skipped: the
 * blocking test's "next-best" choice.
 */
export function nearestCentroid(
  centroids: Float32Array,
  cOff: number,
  k: number,
  dim: number,
  x: Float32Array,
  xo: number,
  exclude = -1,
): number {
  let best = exclude === 0 ? 1 : 0;
  let bestDot = -Infinity;
  for (let c = 0; c < k; c++) {
    if (c === exclude) continue;
    const d = dotAt(centroids, (cOff + c) * dim, x, xo, dim);
    if (d > bestDot) {
      bestDot = d;
      best = c;
    }
  }
  return best;
}

/**
 * Fits k unit centroids to the rows `rows` of `x` (shape (*, dim), rows assumed L2-normalised).
 * Returns (k, dim). With rows.length === 0 this is an error: the tree handles empty nodes itself.
 */
export function sphericalKMeans(x: Float32Array, dim: number, rows: Int32Array, options: KMeansOptions): Float32Array {
  const { k, rng } = options;
  const iterations = options.iterations ?? 20;
  const balanceFactor = options.balanceFactor ?? 1.5;
  const n = rows.length;
  if (n === 0) throw new HiermemError('E_INVALID_ARGUMENT', 'sphericalKMeans: no vectors');
  if (!Number.isInteger(k) || k < 1) throw new HiermemError('E_INVALID_ARGUMENT', `sphericalKMeans: k must be a positive integer, got ${k}`);

  const seeds = kmeansPlusPlus(x, dim, rows, k, rng);
  const m = seeds.length; // distinct seeds found, <= k
  const centroids = new Float32Array(k * dim);
  for (let c = 0; c < m; c++) centroids.set(x.subarray(seeds[c]! * dim, seeds[c]! * dim + dim), c * dim);

  if (m > 1) {
    const assign = new Int32Array(n);
    const sizes = new Int32Array(m);
    for (let it = 0; it < iterations; it++) {
      sizes.fill(0);
      for (let i = 0; i < n; i++) {
        const c = nearestCentroid(centroids, 0, m, dim, x, rows[i]! * dim);
        assign[i] = c;
        sizes[c]!++;
      }
      balance(assign, sizes, balanceFactor, rng);
      fillEmpty(x, dim, rows, centroids, assign, sizes);
      updateCentroids(x, dim, rows, assign, centroids, m);
    }
    repairEmptyRoutes(x, dim, rows, centroids, m);
  }
  // Children with nothing of their own: exact copies (see the header comment for why).
  for (let c = m; c < k; c++) centroids.copyWithin(c * dim, (c % m) * dim, (c % m) * dim + dim);
  return centroids;
}

/**
 * k-means++: the first seed uniformly, each next one with probability proportional to its squared
 * distance to the nearest seed so far. Stops early when every remaining vector coincides with a seed
 * (fewer than k distinct vectors). Returns row indices into x.
 */
/** Squared distance under which two vectors count as the same point (float32 round-off of unit vectors). */
const SAME = 1e-12;

function kmeansPlusPlus(x: Float32Array, dim: number, rows: Int32Array, k: number, rng: Rng): number[] {
  const n = rows.length;
  const d2 = new Float64Array(n).fill(Infinity);
  const sq = Float64Array.from(rows, (r) => dotAt(x, r * dim, x, r * dim, dim));
  const first = rng.int(n);
  const seeds: number[] = [rows[first]!];
  let lastSq = sq[first]!;
  for (;;) {
    const last = seeds[seeds.length - 1]! * dim;
    let total = 0;
    for (let i = 0; i < n; i++) {
      const d = Math.max(0, sq[i]! - 2 * dotAt(x, rows[i]! * dim, x, last, dim) + lastSq);
      if (d < d2[i]!) d2[i] = d;
      if (d2[i]! > SAME) total += d2[i]!;
    }
    if (seeds.length === k || total === 0) return seeds;
    let r = rng.uniform() * total;
    let pick = -1;
    for (let i = 0; i < n; i++) {
      if (d2[i]! <= SAME) continue;
      pick = i;
      r -= d2[i]!;
      if (r < 0) break;
    }
    seeds.push(rows[pick]!);
    lastSq = sq[pick]!;
  }
}

/** The paper's balancing: split the largest cluster's assignments with the smallest's while too large. */
function balance(assign: Int32Array, sizes: Int32Array, factor: number, rng: Rng): void {
  const n = assign.length;
  const m = sizes.length;
  // No assignment can beat ceil(n/m); a lower limit would split forever on small nodes.
  const limit = Math.max((factor * n) / m, Math.ceil(n / m));
  // Terminates: the smallest cluster is then strictly below the limit, so each split strictly lowers
  // sum(max(0, size - limit)); the cap is only a guard.
  for (let guard = 0; guard <= n + m; guard++) {
    let big = 0;
    let small = 0;
    for (let c = 1; c < m; c++) {
      if (sizes[c]! > sizes[big]!) big = c;
      if (sizes[c]! < sizes[small]!) small = c;
    }
    if (sizes[big]! <= limit) return;
    const pool: number[] = [];
    for (let i = 0; i < n; i++) if (assign[i] === big || assign[i] === small) pool.push(i);
    rng.shuffle(pool);
    const half = Math.ceil(pool.length / 2);
    for (let j = 0; j < pool.length; j++) assign[pool[j]!] = j < half ? big : small;
    sizes[big] = half;
    sizes[small] = pool.length - half;
  }
}

/** An empty cluster takes the member of the largest cluster that is farthest from its centroid. */
function fillEmpty(x: Float32Array, dim: number, rows: Int32Array, centroids: Float32Array, assign: Int32Array, sizes: Int32Array): void {
  const m = sizes.length;
  for (let c = 0; c < m; c++) {
    if (sizes[c] !== 0) continue;
    let big = 0;
    for (let j = 1; j < m; j++) if (sizes[j]! > sizes[big]!) big = j;
    if (sizes[big]! < 2) return;
    let far = -1;
    let farDot = Infinity;
    for (let i = 0; i < assign.length; i++) {
      if (assign[i] !== big) continue;
      const d = dotAt(centroids, big * dim, x, rows[i]! * dim, dim);
      if (d < farDot) {
        farDot = d;
        far = i;
      }
    }
    assign[far] = c;
    sizes[big]!--;
    sizes[c] = 1;
  }
}

/** Centroid = normalised sum of its members; a cluster whose sum vanishes keeps its old centroid. */
function updateCentroids(x: Float32Array, dim: number, rows: Int32Array, assign: Int32Array, centroids: Float32Array, m: number): void {
  const sums = new Float64Array(m * dim);
  for (let i = 0; i < rows.length; i++) {
    const o = rows[i]! * dim;
    const s = assign[i]! * dim;
    for (let j = 0; j < dim; j++) sums[s + j] = sums[s + j]! + x[o + j]!;
  }
  for (let c = 0; c < m; c++) {
    let sq = 0;
    for (let j = 0; j < dim; j++) sq += sums[c * dim + j]! * sums[c * dim + j]!;
    if (!(sq > 0)) continue;
    const inv = 1 / Math.sqrt(sq);
    for (let j = 0; j < dim; j++) centroids[c * dim + j] = sums[c * dim + j]! * inv;
  }
}

/**
 * Balancing acts on assignments, but routing is nearest-centroid, so a final centroid can end up
 * winning no vector. Such a centroid is moved onto the vector that is farthest from its own
 * centroid in the most populated route (that vector then routes to it, dot = 1), up to m times.
 */
function repairEmptyRoutes(x: Float32Array, dim: number, rows: Int32Array, centroids: Float32Array, m: number): void {
  const n = rows.length;
  const route = new Int32Array(n);
  const sizes = new Int32Array(m);
  for (let attempt = 0; attempt < m; attempt++) {
    sizes.fill(0);
    for (let i = 0; i < n; i++) {
      route[i] = nearestCentroid(centroids, 0, m, dim, x, rows[i]! * dim);
      sizes[route[i]!]!++;
    }
    const empty = sizes.indexOf(0);
    if (empty < 0) return;
    let big = 0;
    for (let c = 1; c < m; c++) if (sizes[c]! > sizes[big]!) big = c;
    if (sizes[big]! < 2) return;
    let far = -1;
    let farDot = Infinity;
    for (let i = 0; i < n; i++) {
      if (route[i] !== big) continue;
      const d = dotAt(centroids, big * dim, x, rows[i]! * dim, dim);
      if (d < farDot) {
        farDot = d;
        far = i;
      }
    }
    centroids.set(x.subarray(rows[far]! * dim, rows[far]! * dim + dim), empty * dim);
  }
}
