import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/shared/core/backend.js';
import { BATCH_NORM_TRAIN_GRAD, batchNormTraining } from '../../src/shared/kernels/batch-norm-train.js';
import { relError } from '../helpers/conv-reference.js';
import { randomFloats } from '../helpers/random.js';

// Issue #17: training-mode batch norm (→ ReLU) as one op on wasm. Its value, its batch moments and the gradients of
// x, scale and offset must equal tfjs-core's composition (moments, batchNorm, relu) on the cpu backend within 1e-4
// relative, including channel counts that are not a multiple of 4 (the kernels' scalar tails).

const EPSILON = 1e-3;

const CASES = [
  { name: 'conv output [4, 6, 6, 32], ReLU', shape: [4, 6, 6, 32], relu: true },
  { name: 'dense output [16, 128], ReLU', shape: [16, 128], relu: true },
  { name: 'without ReLU [5, 3, 3, 8]', shape: [5, 3, 3, 8], relu: false },
  { name: '6 channels (scalar tail) [4, 5, 6], ReLU', shape: [4, 5, 6], relu: true },
  { name: 'exactly 4 rows [4, 12], ReLU', shape: [4, 12], relu: true },
  { name: 'a mean far from 0 against the spread (x ≈ 500 ± 3) [3, 9, 9, 8], ReLU', shape: [3, 9, 9, 8], relu: true, shift: 500 },
  { name: 'conv output [4, 6, 6, 32], ReLU, 2×2 max pool', shape: [4, 6, 6, 32], relu: true, pool: true },
  { name: 'odd sides [3, 7, 5, 8], ReLU, 2×2 max pool (a row and a column no window covers)', shape: [3, 7, 5, 8], relu: true, pool: true },
  { name: 'rows of 40 [2, 4, 40, 8], ReLU, 2×2 max pool (a pair of image rows spans two blocks of 64)', shape: [2, 4, 40, 8], relu: true, pool: true },
] as const;

/** The op's output shape: the pooled one with pool. */
const outShape = (shape: readonly number[], pool: boolean): number[] =>
  pool ? [shape[0]!, Math.floor(shape[1]! / 2), Math.floor(shape[2]! / 2), shape[3]!] : [...shape];

type Values = { x: Float32Array; scale: Float32Array; offset: Float32Array; dy: Float32Array };

function reference(shape: readonly number[], relu: boolean, pool: boolean, v: Values): Float32Array[] {
  return tf.tidy(() => {
    const axes = shape.slice(0, -1).map((_, i) => i);
    const f = (x: tf.Tensor, scale: tf.Tensor, offset: tf.Tensor) => {
      const { mean, variance } = tf.moments(x, axes);
      const y = tf.batchNorm(x, mean, variance, offset, scale, EPSILON);
      const activated = relu ? tf.relu(y) : y;
      return { y: pool ? tf.maxPool(activated as tf.Tensor4D, 2, 2, 'valid') : activated, mean, variance };
    };
    const args = [tf.tensor(v.x, [...shape]), tf.tensor1d(v.scale), tf.tensor1d(v.offset)] as const;
    const { y, mean, variance } = f(...args);
    const grads = tf.grads((x, s, o) => tf.sum(tf.mul(f(x!, s!, o!).y, tf.tensor(v.dy, outShape(shape, pool)))))([...args]);
    return [y, mean, variance, ...grads].map((t) => t.dataSync() as Float32Array);
  });
}

function fused(shape: readonly number[], relu: boolean, pool: boolean, v: Values): Float32Array[] {
  return tf.tidy(() => {
    const moments: tf.Tensor[] = [];
    const f = (x: tf.Tensor, scale: tf.Tensor, offset: tf.Tensor) =>
      batchNormTraining(x, scale, offset, { epsilon: EPSILON, relu, pool }, (mean, variance) => {
        if (moments.length === 0) moments.push(tf.keep(mean.clone()), tf.keep(variance.clone()));
      });
    const args = [tf.tensor(v.x, [...shape]), tf.tensor1d(v.scale), tf.tensor1d(v.offset)] as const;
    const y = f(...args);
    const grads = tf.grads((x, s, o) => tf.sum(tf.mul(f(x!, s!, o!), tf.tensor(v.dy, outShape(shape, pool)))))([...args]);
    const out = [y, moments[0]!, moments[1]!, ...grads].map((t) => t.dataSync() as Float32Array);
    tf.dispose(moments);
    return out;
  });
}

describe('batchNormTraining (kernels/batch-norm-train.ts)', () => {
  beforeAll(async () => {
    await initBackend('wasm');
  });

  describe.each(CASES.map((c) => [c.name, c] as const))('%s', (_name, c) => {
    it('equals moments → batchNorm (→ relu (→ maxPool)) on cpu: value, mean, variance and the gradients of x, scale and offset', async () => {
      const pool = 'pool' in c && c.pool;
      const size = c.shape.reduce((a, b) => a * b, 1);
      const channels = c.shape[c.shape.length - 1]!;
      // An offset mean and spread per channel, as a layer's input has; a negative offset so that ReLU zeros occur.
      const v: Values = {
        x: randomFloats(size, 11).map((x, i) => 3 * x + (i % channels) * 0.25 - 1 + ('shift' in c ? c.shift : 0)),
        scale: randomFloats(channels, 12, 0.5, 1.5),
        offset: randomFloats(channels, 13, -0.5, 0.2),
        dy: randomFloats(outShape(c.shape, pool).reduce((a, b) => a * b, 1), 14),
      };
      await tf.setBackend('cpu');
      const want = reference(c.shape, c.relu, pool, v);
      await tf.setBackend('wasm');
      const before = tf.memory().numTensors;
      const got = fused(c.shape, c.relu, pool, v);
      expect(tf.memory().numTensors).toBe(before);
      ['value', 'mean', 'variance', 'dx', 'dScale', 'dOffset'].forEach((what, i) => {
        expect(got[i]!.length, what).toBe(want[i]!.length);
        expect(relError(got[i]!, want[i]!), what).toBeLessThan(1e-4);
      });
      // Unpooled, a tenth of the outputs are ReLU zeros; pooled, a window pools to 0 only when all four are.
      if (c.relu) expect(got[0]!.filter((y) => y === 0).length, 'ReLU zeros').toBeGreaterThan(got[0]!.length / (pool ? 20 : 10));
    });
  });

  it('its gradient kernel checks rows, shapes and dtype as a stock kernel does', () => {
    const run = (x: number[], p: number[], opts: { dy?: number[]; offset?: number[]; dtype?: 'float32' | 'int32' } = {}) => () => tf.tidy(() =>
      tf.engine().runKernel(BATCH_NORM_TRAIN_GRAD, {
        dy: tf.zeros(opts.dy ?? x), x: tf.zeros(x, opts.dtype ?? 'float32'), mean: tf.zeros(p), variance: tf.ones(p), scale: tf.ones(p), offset: tf.zeros(opts.offset ?? p),
      }, { varianceEpsilon: EPSILON, relu: true }));
    expect(run([4, 8], [8])).not.toThrow();
    expect(run([3, 8], [8])).toThrow(/at least 4 rows/);
    expect(run([4, 8], [6])).toThrow(/must have shape \[8\]/);
    expect(run([4, 8], [8], { offset: [4] })).toThrow(/offset must have shape \[8\]/);
    expect(run([4, 8], [8], { dy: [4, 6] })).toThrow(/dy and x must have the same shape/);
    expect(run([4, 8], [8], { dtype: 'int32' })).toThrow(/float32/);
  });

  it('with pool, its kernels check what pooling needs', () => {
    const forward = (x: number[], relu: boolean) => () => tf.tidy(() =>
      tf.engine().runKernel('MnistDdpBatchNormTrain', { x: tf.zeros(x), scale: tf.ones([x.at(-1)!]), offset: tf.zeros([x.at(-1)!]) }, { varianceEpsilon: EPSILON, relu, pool: true }));
    expect(forward([2, 4, 4, 8], true)).not.toThrow();
    expect(forward([2, 4, 4, 8], false)).toThrow(/pooling needs relu/);
    expect(forward([2, 4, 4, 6], true)).toThrow(/pooling needs relu/);
    expect(forward([8, 16], true)).toThrow(/pooling needs relu/);
    const grad = (dy: number[], pooled: number[] | undefined, codes: number[] | undefined) => () => tf.tidy(() =>
      tf.engine().runKernel(BATCH_NORM_TRAIN_GRAD, {
        dy: tf.zeros(dy), x: tf.zeros([2, 4, 4, 8]), mean: tf.zeros([8]), variance: tf.ones([8]), scale: tf.ones([8]), offset: tf.zeros([8]),
        ...(pooled ? { pooled: tf.zeros(pooled) } : {}), ...(codes ? { codes: tf.zeros(codes, 'int32') } : {}),
      }, { varianceEpsilon: EPSILON, relu: true, pool: true }));
    expect(grad([2, 2, 2, 8], [2, 2, 2, 8], [2, 2, 2, 2])).not.toThrow();
    expect(grad([2, 2, 2, 8], undefined, undefined)).toThrow(/needs the pooled output and its codes/);
    expect(grad([2, 4, 4, 8], [2, 2, 2, 8], [2, 2, 2, 2])).toThrow(/dy must have the pooled shape/);
    expect(grad([2, 2, 2, 8], [2, 2, 2, 8], [2, 2, 2, 8])).toThrow(/codes must be/);
  });
});
