import { describe, expect, it } from 'vitest';
import { isMnistDdpError } from '../../src/shared/core/errors.js';
import { Rng, deriveSeed, permutationFor } from '../../src/shared/data/rng.js';
import { SnapshotRng, normalSample } from '../helpers/rng-state.js';

function draws(rng: Rng, n: number): number[] {
  return Array.from({ length: n }, () => rng.nextUint32());
}

describe('Rng', () => {
  it('is deterministic for a seed and differs between seeds', () => {
    expect(draws(new Rng(42), 20)).toEqual(draws(new Rng(42), 20));
    expect(draws(new Rng(42), 20)).not.toEqual(draws(new Rng(43), 20));
    expect(draws(new Rng(2 ** 40), 5)).not.toEqual(draws(new Rng(0), 5));
  });

  it('resumes exactly from a saved state (through JSON): the four state words are the whole state', () => {
    const rng = new SnapshotRng(7);
    draws(rng, 13);
    normalSample(rng);
    const saved = JSON.parse(JSON.stringify(rng.getState())) as number[];
    const expected = [rng.nextFloat(), rng.nextInt(10), normalSample(rng), ...Array.from(rng.permutation(8))];
    const resumed = SnapshotRng.fromState(saved);
    expect([resumed.nextFloat(), resumed.nextInt(10), normalSample(resumed), ...Array.from(resumed.permutation(8))]).toEqual(expected);
    const other = new SnapshotRng(1);
    other.setState(saved);
    expect(other.getState()).toEqual(saved);
  });

  it('rejects an invalid state with a coded error', () => {
    const rng = new SnapshotRng(1);
    for (const bad of [[0, 0, 0, 0], [1, 2, 3], [1, 2, 3, 2 ** 32], [1, 2, 3, -1], [1.5, 2, 3, 4]]) {
      try {
        rng.setState(bad);
        expect.unreachable(`accepted ${JSON.stringify(bad)}`);
      } catch (err) {
        expect(isMnistDdpError(err, 'CHECKPOINT_INVALID')).toBe(true);
      }
    }
  });

  it('nextFloat is in [0,1), nextInt in [0,n) and roughly uniform, normal has mean 0 and std 1', () => {
    const rng = new Rng(3);
    const counts = new Array<number>(10).fill(0);
    let sum = 0;
    let sumSq = 0;
    let minF = 1;
    let maxF = 0;
    const n = 20000;
    for (let i = 0; i < n; i++) {
      const f = rng.nextFloat();
      minF = Math.min(minF, f);
      maxF = Math.max(maxF, f);
      const k = rng.nextInt(10);
      counts[k]!++;
      const z = normalSample(rng);
      sum += z;
      sumSq += z * z;
    }
    expect(minF).toBeGreaterThanOrEqual(0);
    expect(maxF).toBeLessThan(1);
    for (const c of counts) expect(Math.abs(c - n / 10)).toBeLessThan(200); // ~7 standard deviations
    expect(Math.abs(sum / n)).toBeLessThan(0.05);
    expect(Math.abs(Math.sqrt(sumSq / n) - 1)).toBeLessThan(0.05);
    expect(rng.nextInt(1)).toBe(0);
    expect(() => rng.nextInt(0)).toThrow(RangeError);
  });

  it('permutation is a permutation and shuffle works on plain arrays', () => {
    const p = new Rng(5).permutation(1000);
    expect(p).toBeInstanceOf(Int32Array);
    expect(Array.from(p).sort((a, b) => a - b)).toEqual(Array.from({ length: 1000 }, (_, i) => i));
    expect(Array.from(p)).not.toEqual(Array.from({ length: 1000 }, (_, i) => i));
    const words = ['a', 'b', 'c', 'd', 'e'];
    new Rng(5).shuffle<string, string[]>(words);
    expect([...words].sort()).toEqual(['a', 'b', 'c', 'd', 'e']);
    expect(new Rng(5).permutation(0).length).toBe(0);
  });
});

describe('permutationFor / deriveSeed', () => {
  it('is a pure function of (seed, epoch, n)', () => {
    expect(permutationFor(1, 3, 500)).toEqual(permutationFor(1, 3, 500));
    expect(permutationFor(1, 3, 500)).not.toEqual(permutationFor(1, 4, 500));
    expect(permutationFor(1, 3, 500)).not.toEqual(permutationFor(2, 3, 500));
  });

  it('mixes order and high bits', () => {
    expect(deriveSeed(1, 2)).not.toBe(deriveSeed(2, 1));
    expect(deriveSeed(2 ** 33)).not.toBe(deriveSeed(0));
    expect(deriveSeed(-1)).not.toBe(deriveSeed(1));
    expect(() => deriveSeed(0.5)).toThrow();
  });
});
