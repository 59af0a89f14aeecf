import { describe, expect, it } from 'vitest';
import { Rng } from '../../src/shared/data/rng.js';
import { apportion, epochOrder, evalSlice, MAX_SHARE_FACTOR, maxShare, rankSlice, shareSlice, stepCount, stepShares } from '../../src/shared/data/shard-plan.js';

/**
 * Walks one epoch the way the coordinator does (coordinator/driver.ts): a cursor advanced by stepCount, each step
 * split among the ranks by rankSlice. `worldAt(step)` may change the world size between steps (elastic runs).
 * Returns how many times each position of [0, epochSize) was handed out, and asserts per-step invariants.
 */
function walkEpoch(epochSize: number, batchSize: number, worldAt: (step: number) => number): { hits: Uint16Array; steps: number } {
  const hits = new Uint16Array(epochSize);
  let cursor = 0;
  let step = 0;
  while (cursor < epochSize) {
    const worldSize = worldAt(step);
    const count = stepCount(epochSize, cursor, worldSize, batchSize);
    expect(count).toBe(Math.min(worldSize * batchSize, epochSize - cursor));
    const sizes: number[] = [];
    let expectedStart = cursor;
    for (let rank = 0; rank < worldSize; rank++) {
      const [start, end] = rankSlice(cursor, count, rank, worldSize);
      // Contiguous, in rank order, inside this step's window.
      expect(start).toBe(expectedStart);
      expect(end).toBeGreaterThanOrEqual(start);
      expectedStart = end;
      sizes.push(end - start);
      for (let p = start; p < end; p++) hits[p]! += 1;
    }
    expect(expectedStart, `step ${step} ends at cursor + count`).toBe(cursor + count);
    expect(Math.max(...sizes) - Math.min(...sizes), `step ${step} sizes ${sizes.join(',')}`).toBeLessThanOrEqual(1);
    cursor += count;
    step++;
  }
  return { hits, steps: step };
}

const exactlyOnce = (hits: Uint16Array): boolean => hits.every((h) => h === 1);

describe('rankSlice / stepCount', () => {
  for (const worldSize of [1, 2, 3, 4, 5]) {
    for (const batchSize of [1, 7, 32, 64]) {
      for (const epochSize of [1, 97, 1000, 1201]) {
        it(`world ${worldSize}, batch ${batchSize}, epoch ${epochSize}: every position exactly once`, () => {
          const { hits, steps } = walkEpoch(epochSize, batchSize, () => worldSize);
          expect(exactlyOnce(hits)).toBe(true);
          expect(steps).toBe(Math.ceil(epochSize / (worldSize * batchSize)));
        });
      }
    }
  }

  it('splits a short last step unevenly by at most one sample, with some ranks possibly empty', () => {
    // 1201 samples, 4 × 64 per step: 4 full steps (1024), then 177 = 44 + 44 + 44 + 45.
    expect(stepCount(1201, 1024, 4, 64)).toBe(177);
    const sizes = [0, 1, 2, 3].map((r) => { const [s, e] = rankSlice(1024, 177, r, 4); return e - s; });
    expect(sizes).toEqual([44, 44, 44, 45]);
    // 3 samples left for 5 ranks: two ranks get nothing, none gets two.
    const tiny = [0, 1, 2, 3, 4].map((r) => { const [s, e] = rankSlice(10, 3, r, 5); return e - s; });
    expect(tiny.sort()).toEqual([0, 0, 1, 1, 1]);
  });

  it('covers the epoch exactly once when the world size changes between steps', () => {
    const schedules: Array<[string, (step: number) => number]> = [
      ['2 → 3 → 2', (s) => (s < 3 ? 2 : s < 7 ? 3 : 2)],
      ['1..5 cycling', (s) => (s % 5) + 1],
      ['5 → 1', (s) => Math.max(1, 5 - s)],
      ['pseudo-random', (s) => ((s * 7919) % 5) + 1],
    ];
    for (const [name, worldAt] of schedules) {
      for (const [epochSize, batchSize] of [[1201, 32], [997, 10], [60, 64]] as const) {
        expect(exactlyOnce(walkEpoch(epochSize, batchSize, worldAt).hits), `${name}, epoch ${epochSize}, batch ${batchSize}`).toBe(true);
      }
    }
  });

  it('a world change mid-epoch continues from the cursor: the first step after it starts where the last one ended', () => {
    const before = rankSlice(0, 2 * 32, 1, 2); // rank 1 of 2, step at cursor 0
    expect(before).toEqual([32, 64]);
    expect(rankSlice(64, 3 * 32, 0, 3)).toEqual([64, 96]);
    expect(rankSlice(64, 3 * 32, 2, 3)).toEqual([128, 160]);
  });
});

/** Weights spread over six orders of magnitude, as measured speeds of a GPU and CPUs can be. */
function randomWeights(rng: Rng, n: number): number[] {
  return Array.from({ length: n }, () => 10 ** (rng.nextFloat() * 6 - 3));
}

/**
 * The largest-remainder properties of apportion's result: integers in [min, max] summing to `total`, in the order of
 * the weights, and within one sample of one common proportion λ·w for every rank not held at a bound.
 */
function expectApportioned(shares: readonly number[], total: number, weights: readonly number[], min: number, max: number): void {
  const label = `total ${total}, weights ${weights.map((w) => w.toPrecision(3)).join(',')}, [${min}, ${max}] → ${shares.join(',')}`;
  expect(shares.every((s) => Number.isInteger(s) && s >= min && s <= max), label).toBe(true);
  expect(shares.reduce((a, b) => a + b, 0), label).toBe(total);
  for (let i = 0; i < weights.length; i++) {
    for (let j = 0; j < weights.length; j++) {
      if (weights[i]! > weights[j]!) expect(shares[i]!, `${label}: rank ${i} weighs more than rank ${j}`).toBeGreaterThanOrEqual(shares[j]!);
    }
  }
  const free = shares.map((s, i) => ({ s, w: weights[i]! })).filter(({ s }) => s > min && s < max);
  if (free.length > 1) {
    // Some λ has |s − λw| < 1 for each of them: the intervals ((s − 1)/w, (s + 1)/w) share a point.
    const lo = Math.max(...free.map(({ s, w }) => (s - 1) / w));
    const hi = Math.min(...free.map(({ s, w }) => (s + 1) / w));
    expect(lo, `${label}: not within one sample of a common proportion`).toBeLessThan(hi);
  }
}

describe('apportion (unequal shares, issue #13)', () => {
  it('splits proportionally with largest-remainder rounding', () => {
    expect(apportion(10, [1, 1, 1])).toEqual([4, 3, 3]);
    expect(apportion(128, [1, 15])).toEqual([8, 120]);
    expect(apportion(7, [2, 1], { min: 1 })).toEqual([5, 2]);
    // A rank held at the cap gives its excess to the others in proportion.
    expect(apportion(256, [1000, 1, 1, 1], { min: 1, max: 100 })).toEqual([100, 52, 52, 52]);
    // A rank held at the minimum takes it from the others.
    expect(apportion(128, [1e-6, 1], { min: 1, max: 256 })).toEqual([1, 127]);
    expect(apportion(0, [3, 1])).toEqual([0, 0]);
    expect(() => apportion(3, [1, 1], { min: 2 })).toThrow(RangeError);
    expect(() => apportion(9, [1, 1], { max: 4 })).toThrow(RangeError);
    expect(() => apportion(4, [1, 0])).toThrow(RangeError);
  });

  it('over 2000 random weight vectors: integers in [1, maxShare] summing to the global batch, proportional within one sample', () => {
    const rng = new Rng(13);
    for (let trial = 0; trial < 2000; trial++) {
      const n = 1 + rng.nextInt(8);
      const batchSize = 1 + rng.nextInt(trial % 4 === 0 ? 4 : 128);
      const weights = randomWeights(rng, n);
      const shares = apportion(n * batchSize, weights, { min: 1, max: maxShare(batchSize) });
      expectApportioned(shares, n * batchSize, weights, 1, maxShare(batchSize));
      // Deterministic: the same arguments give the same split.
      expect(apportion(n * batchSize, weights, { min: 1, max: maxShare(batchSize) })).toEqual(shares);
    }
  });

  it('caps the fastest rank at MAX_SHARE_FACTOR × the batch size', () => {
    const shares = apportion(8 * 64, [1000, 1, 1, 1, 1, 1, 1, 1], { min: 1, max: maxShare(64) });
    expect(shares[0]).toBe(MAX_SHARE_FACTOR * 64);
    expect(shares.slice(1).every((s) => s >= 36 && s <= 37)).toBe(true);
  });
});

/**
 * walkEpoch with unequal shares: `sharesAt(step)` gives the generation's full-step shares (their count is the world
 * size; they may change between any two steps, as rebalancing and membership changes do), each step is split by
 * stepShares and shareSlice.
 */
function walkEpochShares(epochSize: number, batchSize: number, sharesAt: (step: number) => number[]): Uint16Array {
  const hits = new Uint16Array(epochSize);
  let cursor = 0;
  let step = 0;
  while (cursor < epochSize) {
    const generationShares = sharesAt(step);
    const worldSize = generationShares.length;
    const count = stepCount(epochSize, cursor, worldSize, batchSize);
    const shares = stepShares(count, generationShares);
    expect(shares.reduce((a, b) => a + b, 0)).toBe(count);
    let expectedStart = cursor;
    for (let rank = 0; rank < worldSize; rank++) {
      const [start, end] = shareSlice(cursor, shares, rank);
      expect(start).toBe(expectedStart);
      expect(end - start).toBe(shares[rank]);
      // A short last step keeps the proportions: no rank gets more than its full-step share.
      expect(end - start, `step ${step} rank ${rank}: ${shares.join(',')} of ${generationShares.join(',')}`).toBeLessThanOrEqual(generationShares[rank]!);
      expectedStart = end;
      for (let p = start; p < end; p++) hits[p]! += 1;
    }
    expect(expectedStart).toBe(cursor + count);
    cursor += count;
    step++;
  }
  return hits;
}

describe('shareSlice / stepShares: exactly once with unequal shares (issue #13)', () => {
  it('over 500 random share vectors, rebalanced and resized at random steps, every position exactly once', () => {
    const rng = new Rng(29);
    for (let trial = 0; trial < 500; trial++) {
      const batchSize = 1 + rng.nextInt(48);
      const epochSize = 1 + rng.nextInt(1500);
      const every = 1 + rng.nextInt(6);
      let current: number[] = [];
      const sharesAt = (step: number): number[] => {
        if (step % every === 0 || current.length === 0) {
          const n = 1 + rng.nextInt(6);
          current = apportion(n * batchSize, randomWeights(rng, n), { min: 1, max: maxShare(batchSize) });
        }
        return current;
      };
      const hits = walkEpochShares(epochSize, batchSize, sharesAt);
      expect(exactlyOnce(hits), `trial ${trial}: epoch ${epochSize}, batch ${batchSize}`).toBe(true);
    }
  });

  it('a short last step keeps the proportions, and a full step is the shares themselves', () => {
    expect(stepShares(128, [8, 120])).toEqual([8, 120]);
    expect(stepShares(64, [8, 120])).toEqual([4, 60]);
    expect(stepShares(3, [1, 1, 126])).toEqual([0, 0, 3]);
    expect(stepShares(0, [5, 7])).toEqual([0, 0]);
    expect(() => stepShares(13, [5, 7])).toThrow(RangeError);
    expect(shareSlice(100, [8, 120], 0)).toEqual([100, 108]);
    expect(shareSlice(100, [8, 120], 1)).toEqual([108, 228]);
  });
});

describe('evalSlice', () => {
  it('tiles [0, total) with exact counts and no padding', () => {
    for (const total of [0, 1, 9, 10_000, 10_001]) {
      for (let worldSize = 1; worldSize <= 5; worldSize++) {
        const slices = Array.from({ length: worldSize }, (_, r) => evalSlice(total, r, worldSize));
        expect(slices[0]![0]).toBe(0);
        expect(slices[worldSize - 1]![1]).toBe(total);
        for (let r = 1; r < worldSize; r++) expect(slices[r]![0]).toBe(slices[r - 1]![1]);
        const sizes = slices.map(([s, e]) => e - s);
        expect(Math.max(...sizes) - Math.min(...sizes)).toBeLessThanOrEqual(1);
      }
    }
  });
});

describe('epochOrder', () => {
  // A sorted, non-contiguous set of training indices, as after a validation split.
  const train = Int32Array.from({ length: 1200 }, (_, i) => i * 3 + (i % 2));

  it('is a permutation of the training indices', () => {
    for (const epoch of [0, 1, 7]) {
      const order = epochOrder(train, 9, epoch);
      expect(order).toHaveLength(train.length);
      expect(Int32Array.from(order).sort()).toEqual(train);
    }
  });

  it('differs between epochs and between seeds, and repeats for the same seed and epoch', () => {
    const a0 = epochOrder(train, 9, 0);
    expect(epochOrder(train, 9, 0)).toEqual(a0);
    expect(epochOrder(train, 9, 1)).not.toEqual(a0);
    expect(epochOrder(train, 10, 0)).not.toEqual(a0);
    // Actually shuffled, not the identity or a rotation.
    const fixedPoints = a0.filter((v, i) => v === train[i]).length;
    expect(fixedPoints).toBeLessThan(20);
    const orders = [0, 1, 2, 3, 4].map((e) => epochOrder(train, 9, e).join(','));
    expect(new Set(orders).size).toBe(5);
  });

  it('handles an empty and a one-sample training set', () => {
    expect(epochOrder(new Int32Array(0), 1, 0)).toHaveLength(0);
    expect(Array.from(epochOrder(Int32Array.of(42), 1, 3))).toEqual([42]);
  });
});
