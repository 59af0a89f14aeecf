import { describe, expect, it } from 'vitest';
import { epochOrder, evalSlice, rankSlice, stepCount } from '../../src/shared/data/shard-plan.js';

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
