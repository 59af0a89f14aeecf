import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/shared/core/backend.js';
import { DROPOUT, dropoutOp } from '../../src/shared/kernels/dropout.js';
import { dropoutMask, dropoutParams } from '../../src/shared/train/dropout.js';
import { randomFloats } from '../helpers/random.js';

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

describe('the dropout kernel (kernels/dropout.ts, native/dropout.c)', () => {
  beforeAll(async () => {
    await initBackend('wasm');
  });

  const cases: Array<{ name: string; shape: number[]; rate: number; seed: number; firstKey: number }> = [
    { name: "cnn-large's first dropout", shape: [5, 14, 14, 32], rate: 0.25, seed: 4, firstKey: 120_000 },
    { name: 'an odd sample size (the scalar tail)', shape: [3, 7, 3], rate: 0.5, seed: 9, firstKey: 7 },
    { name: 'keys past 2^32', shape: [4, 33], rate: 0.4, seed: 1, firstKey: 2 ** 32 - 2 },
  ];
  it.each(cases)('draws the bits dropoutMask draws, forward and in the gradient: $name', ({ shape, rate, seed, firstKey }) => {
    const size = shape.reduce((a, b) => a * b, 1);
    const x = randomFloats(size, 11);
    x[3] = NaN;
    const dy = randomFloats(size, 12);
    const mask = dropoutMask(shape[0]!, size / shape[0]!, rate, seed, firstKey);
    const [y, dx] = tf.tidy(() => {
      const attrs = { ...dropoutParams(rate, seed), firstKey };
      const xs = tf.tensor(x, shape);
      const value = dropoutOp(xs, attrs);
      const grad = tf.grad((t: tf.Tensor) => tf.sum(tf.mul(dropoutOp(t, attrs), tf.tensor(dy, shape))))(xs);
      return [value.dataSync(), grad.dataSync()];
    });
    const same = (got: Float32Array | Int32Array | Uint8Array, want: Float32Array) => got.every((v, i) => Object.is(v, want[i]));
    expect(same(y!, x.map((v, i) => v * mask[i]!))).toBe(true);
    expect(same(dx!, dy.map((v, i) => v * mask[i]!))).toBe(true);
  });

  it('checks its input and key as a stock kernel does', () => {
    const run = (x: tf.Tensor, firstKey: number) => () => tf.tidy(() => tf.engine().runKernel(DROPOUT, { x }, { ...dropoutParams(0.5, 1), firstKey } as never));
    expect(run(tf.zeros([2, 3], 'int32'), 0)).toThrow(/float32/);
    expect(run(tf.zeros([2, 3]), -1)).toThrow(/non-negative safe integer/);
    expect(run(tf.zeros([2, 3]), 0.5)).toThrow(/non-negative safe integer/);
    expect(run(tf.zeros([0, 3]), 0)).not.toThrow();
  });
});
