import { describe, expect, it } from 'vitest';
import { dropoutMask } from '../../src/shared/train/dropout.js';

// Dropout masks (train/dropout.ts): inverted dropout's multipliers, drawn per sample from (seed, sample key), so a new
// mask every step and the same mask for the same sample wherever it is computed.

describe('dropoutMask', () => {
  it('keeps 1 - rate of the units, scaled by 1 / (1 - rate), and drops the rest', () => {
    for (const rate of [0.25, 0.4, 0.5]) {
      const mask = dropoutMask(64, 6272, rate, 7, 1000);
      const scale = Math.fround(1 / (1 - rate));
      const kept = mask.filter((m) => m === scale).length;
      expect(mask.every((m) => m === 0 || m === scale)).toBe(true);
      // 401 408 draws: the kept fraction's standard deviation is below 0.001.
      expect(Math.abs(kept / mask.length - (1 - rate))).toBeLessThan(0.005);
    }
  });

  it('keeps every unit at rate 0', () => {
    expect(dropoutMask(3, 10, 0, 1, 0).every((m) => m === 1)).toBe(true);
  });

  it('draws each sample from its own key: split batches and shifted keys give the same masks', () => {
    const whole = dropoutMask(8, 100, 0.25, 3, 5_000);
    const parts = [...dropoutMask(3, 100, 0.25, 3, 5_000), ...dropoutMask(5, 100, 0.25, 3, 5_003)];
    expect(parts).toEqual([...whole]);
    // Keys past 2^32 (epoch × 60 000 + position grows past it after 71 582 epochs) still differ from their low word.
    expect([...dropoutMask(1, 100, 0.25, 3, 2 ** 32 + 5)]).not.toEqual([...dropoutMask(1, 100, 0.25, 3, 5)]);
  });

  it('gives another mask for another key, another seed, and unrelated masks to neighbouring samples', () => {
    const a = dropoutMask(1, 4096, 0.5, 3, 10);
    const other = [dropoutMask(1, 4096, 0.5, 3, 11), dropoutMask(1, 4096, 0.5, 4, 10)];
    for (const b of other) {
      // Independent masks at rate 0.5 agree on half of the units (standard deviation 0.008 over 4096).
      const agree = a.filter((m, i) => m === b[i]).length / a.length;
      expect(Math.abs(agree - 0.5)).toBeLessThan(0.05);
    }
  });
});
