import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/shared/core/backend.js';
import { batchNormTraining } from '../../src/shared/kernels/batch-norm-train.js';
import { CONV_BATCH_NORM_GRAD, convBatchNorm, type ConvBatchNormAttrs } from '../../src/shared/kernels/conv-batch-norm.js';
import { randomFloats } from '../helpers/random.js';

// Issue #17: a bias-free convolution → training-mode batch norm (→ ReLU (→ 2×2 max pool)) runs as one op on wasm,
// whose gradient computes batch norm's input gradient inside the Winograd kernels, tile by tile. Its value, moments
// and four gradients must equal the two ops it replaces (tf.conv2d, then batchNormTraining, each tested against the
// cpu backend) bit for bit: the tiles' dz is the batch-norm kernel's arithmetic, and the convolution kernels are the same.

interface Case {
  name: string;
  x: [number, number, number, number];
  filter: [number, number, number, number];
  attrs: Omit<ConvBatchNormAttrs, 'varianceEpsilon'>;
}

const CASES: Case[] = [
  { name: "cnn-large's second block, ReLU (14×14: 5×5 tiles)", x: [2, 14, 14, 8], filter: [3, 3, 8, 16], attrs: { strides: [1, 1], pad: 'same', relu: true, pool: false } },
  { name: 'ReLU and pool, 14×14 (4×4 tiles: a window lies in one tile)', x: [2, 14, 14, 8], filter: [3, 3, 8, 8], attrs: { strides: [1, 1], pad: 'same', relu: true, pool: true } },
  { name: 'ReLU and pool, odd sides 9×7 (a row and a column no window covers)', x: [3, 9, 7, 4], filter: [3, 3, 4, 8], attrs: { strides: [1, 1], pad: 'same', relu: true, pool: true } },
  { name: 'no ReLU, valid, 10×10 → 8×8 (4×4 tiles)', x: [2, 10, 10, 4], filter: [3, 3, 4, 12], attrs: { strides: [1, 1], pad: 'valid', relu: false, pool: false } },
  { name: 'ReLU, 11×11 valid → 9×9 (5×5 tiles, a last tile row that is mostly outside)', x: [2, 11, 11, 4], filter: [3, 3, 4, 4], attrs: { strides: [1, 1], pad: 'valid', relu: true, pool: false } },
  { name: "one input channel (cnn-large's first layer: batch norm's kernel, then the direct kernels)", x: [2, 12, 12, 1], filter: [3, 3, 1, 16], attrs: { strides: [1, 1], pad: 'same', relu: true, pool: false } },
  { name: 'stride 2 (batch norm\'s kernel, then im2col)', x: [2, 9, 9, 4], filter: [3, 3, 4, 8], attrs: { strides: [2, 2], pad: 'same', relu: true, pool: false } },
];

const EPSILON = 1e-3;

type Grads = { x: boolean; filter: boolean };

/** [value, mean, variance, dx, dFilter, dScale, dOffset] of sum(op(x, filter, scale, offset) · dy) through `route`. */
function run(c: Case, route: 'op' | 'two ops', grads: Grads = { x: true, filter: true }): Float32Array[] {
  return tf.tidy(() => {
    const cout = c.filter[3];
    const x = tf.tensor4d(randomFloats(c.x.reduce((a, b) => a * b), 1), c.x);
    const filter = tf.tensor4d(randomFloats(c.filter.reduce((a, b) => a * b), 2, -0.3, 0.3), c.filter);
    const scale = tf.tensor1d(randomFloats(cout, 3, 0.5, 1.5));
    const offset = tf.tensor1d(randomFloats(cout, 4, -0.5, 0.2));
    const attrs = { ...c.attrs, varianceEpsilon: EPSILON };
    const moments: tf.Tensor[] = [];
    const onMoments = (mean: tf.Tensor, variance: tf.Tensor): void => {
      if (moments.length === 0) moments.push(tf.keep(mean.clone()), tf.keep(variance.clone()));
    };
    const f = (xv: tf.Tensor4D, fv: tf.Tensor4D, s: tf.Tensor1D, o: tf.Tensor1D): tf.Tensor =>
      route === 'op'
        ? convBatchNorm(xv, fv, s, o, attrs, grads, onMoments)
        : batchNormTraining(tf.conv2d(xv, fv, c.attrs.strides, c.attrs.pad), s, o, { epsilon: EPSILON, relu: attrs.relu, pool: attrs.pool }, onMoments);
    const value = f(x, filter, scale, offset);
    const dy = tf.tensor(randomFloats(value.size, 5), value.shape);
    const all = tf.grads((a, b, s, o) => tf.sum(tf.mul(f(a as tf.Tensor4D, b as tf.Tensor4D, s as tf.Tensor1D, o as tf.Tensor1D), dy)))([x, filter, scale, offset]);
    const out = [value, moments[0]!, moments[1]!, ...all].map((t) => t.dataSync() as Float32Array);
    tf.dispose(moments);
    return out;
  });
}

describe('convBatchNorm (kernels/conv-batch-norm.ts)', () => {
  beforeAll(async () => {
    await initBackend('wasm');
  });

  describe.each(CASES.map((c) => [c.name, c] as const))('%s', (_name, c) => {
    it('equals conv2d → batchNormTraining bit for bit: value, moments and the gradients of x, filter, scale and offset; leaks no tensor', () => {
      const before = tf.memory().numTensors;
      const [op, twoOps] = [run(c, 'op'), run(c, 'two ops')];
      expect(tf.memory().numTensors).toBe(before);
      op.forEach((values, i) => {
        expect(values.length, `output ${i}`).toBe(twoOps[i]!.length);
        expect(values, `output ${i}`).toEqual(twoOps[i]);
      });
      // Not a vacuous comparison: ReLU zeros and non-zero gradients both occur.
      expect(op[3]!.some((v) => v !== 0) && op[4]!.some((v) => v !== 0)).toBe(true);
    });
  });

  it('computes only the gradients asked for: a constant input gets zeros, a frozen filter zeros, the rest unchanged', () => {
    const c = CASES[0]!;
    const full = run(c, 'op');
    const noX = run(c, 'op', { x: false, filter: true });
    const noFilter = run(c, 'op', { x: true, filter: false });
    expect(noX[3]!.every((v) => v === 0)).toBe(true);
    expect(noFilter[4]!.every((v) => v === 0)).toBe(true);
    expect([noX[4], noX[5], noX[6]]).toEqual([full[4], full[5], full[6]]);
    expect([noFilter[3], noFilter[5], noFilter[6]]).toEqual([full[3], full[5], full[6]]);
  });

  it('refuses a z that is not the convolution\'s output and a dy of the wrong shape', () => {
    tf.tidy(() => {
      const x = tf.zeros([2, 6, 6, 4]), filter = tf.zeros([3, 3, 4, 8]), p = tf.ones([8]);
      const attrs = { strides: [1, 1], pad: 'same', varianceEpsilon: EPSILON, relu: true, pool: false, inputGrad: true, filterGrad: true };
      const call = (z: tf.Tensor, dy: tf.Tensor) => tf.engine().runKernel(CONV_BATCH_NORM_GRAD, { dy, x, filter, z, scale: p, offset: p, mean: p, variance: p }, attrs as never);
      expect(() => call(tf.zeros([2, 5, 6, 8]), tf.zeros([2, 5, 6, 8]))).toThrow(/z must be the convolution's output/);
      expect(() => call(tf.zeros([2, 6, 6, 8]), tf.zeros([2, 3, 3, 8]))).toThrow(/dy and z must have the same shape/);
    });
  });
});
