import { describe, expect, it } from 'vitest';
import { augmentBatch, transformImage } from '../../src/shared/data/augment.js';
import { IMAGE_PIXELS, NORMALISED_BACKGROUND, gatherBatch, loadMnist } from '../../src/shared/data/mnist.js';
import { Rng } from '../../src/shared/data/rng.js';
import { SnapshotRng } from '../helpers/rng-state.js';

function realBatch(n: number): Float32Array {
  const { train } = loadMnist();
  return gatherBatch(train.images, train.labels, Int32Array.from({ length: n }, (_, i) => i)).x;
}

/** A 28×28 image with a distinct value at every pixel, so moves are unambiguous. */
function ramp(rows = 28, cols = 28): Float32Array {
  return Float32Array.from({ length: rows * cols }, (_, i) => i + 1);
}

describe('augmentBatch', () => {
  it('is deterministic for a seed and differs for another seed', () => {
    const original = realBatch(16);
    const a = original.slice();
    const b = original.slice();
    const c = original.slice();
    augmentBatch(a, 16, new Rng(1));
    augmentBatch(b, 16, new Rng(1));
    augmentBatch(c, 16, new Rng(2));
    expect(a).toEqual(b);
    expect(a).not.toEqual(original);
    expect(Array.from(a)).not.toEqual(Array.from(c));
  });

  it('resumes from a saved rng state', () => {
    const original = realBatch(8);
    const rng = new SnapshotRng(9);
    augmentBatch(original.slice(), 8, rng);
    const saved = rng.getState();
    const next = original.slice();
    augmentBatch(next, 8, rng);
    const resumed = original.slice();
    augmentBatch(resumed, 8, SnapshotRng.fromState(saved));
    expect(resumed).toEqual(next);
  });

  it('consumes the same number of draws whatever the options', () => {
    const a = new SnapshotRng(5);
    const b = new SnapshotRng(5);
    augmentBatch(realBatch(4), 4, a);
    augmentBatch(realBatch(4), 4, b, { maxShift: 0, maxRotationDeg: 0 });
    expect(a.getState()).toEqual(b.getState());
  });

  it('zero shift and rotation is the identity', () => {
    const original = realBatch(4);
    const x = original.slice();
    augmentBatch(x, 4, new Rng(3), { maxShift: 0, maxRotationDeg: 0 });
    expect(x).toEqual(original);
    const dst = new Float32Array(IMAGE_PIXELS);
    const src = ramp();
    transformImage(src, dst, 28, 28, 0, 0, 0, -1);
    expect(dst).toEqual(src);
  });

  it('only produces values between the fill and the brightest input pixel (bilinear = convex mix)', () => {
    const x = realBatch(8);
    let max = -Infinity;
    for (const v of x) max = Math.max(max, v);
    augmentBatch(x, 8, new Rng(11));
    let lo = Infinity;
    let hi = -Infinity;
    for (const v of x) {
      lo = Math.min(lo, v);
      hi = Math.max(hi, v);
    }
    expect(lo).toBeGreaterThanOrEqual(NORMALISED_BACKGROUND - 1e-5);
    expect(hi).toBeLessThanOrEqual(max + 1e-5);
  });
});

describe('transformImage', () => {
  const fill = -7;

  it('shift by +1 px in x moves every pixel one column right and fills column 0', () => {
    const src = ramp();
    const dst = new Float32Array(IMAGE_PIXELS);
    transformImage(src, dst, 28, 28, 1, 0, 0, fill);
    for (let y = 0; y < 28; y++) {
      expect(dst[y * 28]).toBe(fill);
      for (let x = 1; x < 28; x++) expect(dst[y * 28 + x]).toBe(src[y * 28 + x - 1]);
    }
  });

  it('shift by +1 px in y moves every pixel one row down and fills row 0', () => {
    const src = ramp();
    const dst = new Float32Array(IMAGE_PIXELS);
    transformImage(src, dst, 28, 28, 0, 1, 0, fill);
    expect(Array.from(dst.subarray(0, 28))).toEqual(new Array(28).fill(fill));
    expect(dst.subarray(28)).toEqual(src.subarray(0, 27 * 28));
  });

  it('positive angle turns clockwise as displayed (right of centre → below centre)', () => {
    const src = new Float32Array(25);
    src[2 * 5 + 3] = 1; // x=3, y=2: one right of the centre (2, 2)
    const dst = new Float32Array(25);
    transformImage(src, dst, 5, 5, 0, 0, Math.PI / 2, 0);
    expect(dst[3 * 5 + 2]).toBeCloseTo(1, 6); // x=2, y=3: one below the centre
    let total = 0;
    for (const v of dst) total += v;
    expect(total).toBeCloseTo(1, 6);
  });
});
