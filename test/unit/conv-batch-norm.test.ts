import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/shared/core/backend.js';
import { BATCH_NORM_TRAIN, BATCH_NORM_TRAIN_GRAD } from '../../src/shared/kernels/batch-norm-train.js';
import { CONV_BATCH_NORM_GRAD, convBatchNorm, type ConvBatchNormAttrs } from '../../src/shared/kernels/conv-batch-norm.js';
import { relError } from '../helpers/conv-reference.js';
import { randomFloats } from '../helpers/random.js';

// Issue #17: a bias-free convolution → training-mode batch norm (→ ReLU (→ 2×2 max pool)) runs as one op on wasm: the
// Winograd kernel folds batch norm's moments as it writes the convolution's output, and the gradient computes batch
// norm's input gradient inside the Winograd kernels, tile by tile. The op's value, moments and four gradients must
// equal tfjs-core's composition on the cpu backend within 1e-4 relative; given the same moments, its gradient kernel
// must equal batch norm's gradient kernel followed by the convolution's, bit for bit.

interface Case {
  name: string;
  x: [number, number, number, number];
  filter: [number, number, number, number];
  attrs: Omit<ConvBatchNormAttrs, 'varianceEpsilon'>;
  /** A first layer: x is the images, whose gradient nobody asks for (the direct filter gradient's fused route). */
  first?: true;
}

const CASES: Case[] = [
  { name: "cnn-large's second block, ReLU (14×14: 5×5 tiles)", x: [2, 14, 14, 8], filter: [3, 3, 8, 16], attrs: { strides: [1, 1], pad: 'same', relu: true, pool: false } },
  { name: 'ReLU and pool, 14×14 (5×5 tiles: windows across tiles)', x: [2, 14, 14, 8], filter: [3, 3, 8, 8], attrs: { strides: [1, 1], pad: 'same', relu: true, pool: true } },
  { name: 'ReLU and pool, 8×8 (4×4 tiles: each window in one tile)', x: [3, 8, 8, 4], filter: [3, 3, 4, 8], attrs: { strides: [1, 1], pad: 'same', relu: true, pool: true } },
  { name: 'ReLU and pool, odd sides 9×7 (a row and a column no window covers)', x: [3, 9, 7, 4], filter: [3, 3, 4, 8], attrs: { strides: [1, 1], pad: 'same', relu: true, pool: true } },
  { name: 'no ReLU, valid, 10×10 → 8×8 (4×4 tiles)', x: [2, 10, 10, 4], filter: [3, 3, 4, 12], attrs: { strides: [1, 1], pad: 'valid', relu: false, pool: false } },
  { name: 'ReLU, 11×11 valid → 9×9 (5×5 tiles, a last tile row that is mostly outside)', x: [2, 11, 11, 4], filter: [3, 3, 4, 4], attrs: { strides: [1, 1], pad: 'valid', relu: true, pool: false } },
  { name: "cnn-large's first layer (one input channel: the direct kernels, dz row by row)", x: [2, 12, 12, 1], filter: [3, 3, 1, 16], attrs: { strides: [1, 1], pad: 'same', relu: true, pool: false }, first: true },
  { name: "one input channel with the input's gradient (batch norm's kernel, then the convolution's)", x: [2, 12, 12, 1], filter: [3, 3, 1, 16], attrs: { strides: [1, 1], pad: 'same', relu: true, pool: false } },
  { name: 'one input channel, ReLU and pool (batch norm\'s kernel, then the direct filter gradient)', x: [2, 10, 10, 1], filter: [3, 3, 1, 16], attrs: { strides: [1, 1], pad: 'valid', relu: true, pool: true }, first: true },
  { name: 'stride 2 (batch norm\'s kernel, then im2col)', x: [2, 9, 9, 4], filter: [3, 3, 4, 8], attrs: { strides: [2, 2], pad: 'same', relu: true, pool: false } },
];

const EPSILON = 1e-3;

type Grads = { x: boolean; filter: boolean };

function values(c: Case) {
  const cout = c.filter[3];
  return {
    x: randomFloats(c.x.reduce((a, b) => a * b), 1),
    filter: randomFloats(c.filter.reduce((a, b) => a * b), 2, -0.3, 0.3),
    scale: randomFloats(cout, 3, 0.5, 1.5),
    offset: randomFloats(cout, 4, -0.5, 0.2),
  };
}

/**
 * [value, mean, variance, dx, dFilter, dScale, dOffset] of sum(f(x, filter, scale, offset) · dy): the op on wasm, or
 * conv2d → moments → batchNorm (→ relu (→ maxPool)) on cpu.
 */
async function run(c: Case, route: 'op' | 'cpu', grads: Grads = { x: true, filter: true }): Promise<Float32Array[]> {
  await tf.setBackend(route === 'op' ? 'wasm' : 'cpu');
  const v = values(c);
  return tf.tidy(() => {
    const attrs = { ...c.attrs, varianceEpsilon: EPSILON };
    const moments: tf.Tensor[] = [];
    const keep = (mean: tf.Tensor, variance: tf.Tensor): void => {
      if (moments.length === 0) moments.push(tf.keep(mean.clone()), tf.keep(variance.clone()));
    };
    const f = (x: tf.Tensor4D, filter: tf.Tensor4D, scale: tf.Tensor1D, offset: tf.Tensor1D): tf.Tensor => {
      if (route === 'op') return convBatchNorm(x, filter, scale, offset, attrs, grads, keep);
      const z = tf.conv2d(x, filter, c.attrs.strides, c.attrs.pad);
      const { mean, variance } = tf.moments(z, [0, 1, 2]);
      keep(mean, variance);
      const y = tf.batchNorm(z, mean, variance, offset, scale, EPSILON);
      const activated = attrs.relu ? tf.relu(y) : y;
      return attrs.pool ? tf.maxPool(activated as tf.Tensor4D, 2, 2, 'valid') : activated;
    };
    const args = [tf.tensor4d(v.x, c.x), tf.tensor4d(v.filter, c.filter), tf.tensor1d(v.scale), tf.tensor1d(v.offset)] as const;
    const value = f(...args);
    const dy = tf.tensor(randomFloats(value.size, 5), value.shape);
    const all = tf.grads((a, b, s, o) => tf.sum(tf.mul(f(a as tf.Tensor4D, b as tf.Tensor4D, s as tf.Tensor1D, o as tf.Tensor1D), dy)))([...args]);
    const out = [value, moments[0]!, moments[1]!, ...all].map((t) => t.dataSync() as Float32Array);
    tf.dispose(moments);
    return out;
  });
}

/**
 * [dx, dFilter, dScale, dOffset] from the same saved tensors (z = conv2d on wasm, batch norm's kernel's moments): by
 * CONV_BATCH_NORM_GRAD, or by batch norm's gradient kernel, then Conv2DBackpropInput and Conv2DBackpropFilter.
 */
function gradientKernels(c: Case, route: 'fused' | 'two kernels'): Float32Array[] {
  const v = values(c);
  return tf.tidy(() => {
    const [x, filter, scale, offset] = [tf.tensor4d(v.x, c.x), tf.tensor4d(v.filter, c.filter), tf.tensor1d(v.scale), tf.tensor1d(v.offset)];
    const conv = { strides: c.attrs.strides, pad: c.attrs.pad, dataFormat: 'NHWC', dilations: [1, 1], dimRoundingMode: undefined };
    const bn = { varianceEpsilon: EPSILON, relu: c.attrs.relu, pool: c.attrs.pool };
    const z = tf.conv2d(x, filter, c.attrs.strides, c.attrs.pad);
    const forward = tf.engine().runKernel(BATCH_NORM_TRAIN, { x: z, scale, offset }, bn as never) as tf.Tensor[];
    const [mean, variance] = forward.slice(-2) as [tf.Tensor, tf.Tensor];
    const pool: Record<string, tf.Tensor> = c.attrs.pool ? { pooled: forward[0]!, codes: forward[1]! } : {};
    const dy = tf.tensor(randomFloats(forward[0]!.size, 5), forward[0]!.shape);
    const saved = { x, filter, z, scale, offset, mean, variance, ...pool };
    if (route === 'fused') {
      const attrs = { ...conv, ...bn, inputGrad: !c.first, filterGrad: true };
      return (tf.engine().runKernel(CONV_BATCH_NORM_GRAD, { dy, ...saved }, attrs as never) as tf.Tensor[]).map((t) => t.dataSync() as Float32Array);
    }
    const [dz, dScale, dOffset] = tf.engine().runKernel(BATCH_NORM_TRAIN_GRAD, { dy, x: z, mean, variance, scale, offset, ...pool }, bn as never) as tf.Tensor[];
    const dx = c.first ? [] : [tf.engine().runKernel('Conv2DBackpropInput', { dy: dz!, filter }, { ...conv, inputShape: x.shape } as never) as tf.Tensor];
    const dFilter = tf.engine().runKernel('Conv2DBackpropFilter', { x, dy: dz! }, { ...conv, filterShape: filter.shape } as never) as tf.Tensor;
    return [...dx, dFilter, dScale!, dOffset!].map((t) => t.dataSync() as Float32Array);
  });
}

describe('convBatchNorm (kernels/conv-batch-norm.ts)', () => {
  beforeAll(async () => {
    await initBackend('wasm');
  });

  describe.each(CASES.map((c) => [c.name, c] as const))('%s', (_name, c) => {
    it('equals conv2d → moments → batchNorm (→ relu (→ maxPool)) on cpu within 1e-4: value, moments and the gradients of x, filter, scale and offset; leaks no tensor', async () => {
      const reference = await run(c, 'cpu');
      const before = (await tf.setBackend('wasm'), tf.memory().numTensors);
      const op = await run(c, 'op', { x: !c.first, filter: true });
      expect(tf.memory().numTensors).toBe(before);
      const names = ['value', 'mean', 'variance', 'dx', 'dFilter', 'dScale', 'dOffset'];
      // A first layer's input gradient is not computed (zeros).
      op.forEach((got, i) => expect(relError(got, c.first && i === 3 ? new Float32Array(got.length) : reference[i]!), names[i]).toBeLessThan(1e-4));
      // Not a vacuous comparison: ReLU zeros and non-zero gradients both occur.
      expect((c.first || op[3]!.some((x) => x !== 0)) && op[4]!.some((x) => x !== 0)).toBe(true);
      if (c.attrs.relu) expect(op[0]!.some((x) => x === 0)).toBe(true);
    });

    it('its gradient kernel equals batch norm\'s gradient kernel, then the convolution\'s, bit for bit', async () => {
      await tf.setBackend('wasm');
      const [fused, twoKernels] = [gradientKernels(c, 'fused'), gradientKernels(c, 'two kernels')];
      fused.forEach((got, i) => expect(got, `output ${i}`).toEqual(twoKernels[i]));
    });
  });

  it('computes only the gradients asked for: a constant input gets zeros, a frozen filter zeros, the rest unchanged', async () => {
    const c = CASES[0]!;
    const full = await run(c, 'op');
    const noX = await run(c, 'op', { x: false, filter: true });
    const noFilter = await run(c, 'op', { x: true, filter: false });
    expect(noX[3]!.every((v) => v === 0)).toBe(true);
    expect(noFilter[4]!.every((v) => v === 0)).toBe(true);
    expect([noX[4], noX[5], noX[6]]).toEqual([full[4], full[5], full[6]]);
    expect([noFilter[3], noFilter[5], noFilter[6]]).toEqual([full[3], full[5], full[6]]);
  });

  it("refuses a z that is not the convolution's output and a dy of the wrong shape", async () => {
    await tf.setBackend('wasm');
    tf.tidy(() => {
      const x = tf.zeros([2, 6, 6, 4]), filter = tf.zeros([3, 3, 4, 8]), p = tf.ones([8]);
      const attrs = { strides: [1, 1], pad: 'same', varianceEpsilon: EPSILON, relu: true, pool: false, inputGrad: true, filterGrad: true };
      const call = (z: tf.Tensor, dy: tf.Tensor) => tf.engine().runKernel(CONV_BATCH_NORM_GRAD, { dy, x, filter, z, scale: p, offset: p, mean: p, variance: p }, attrs as never);
      expect(() => call(tf.zeros([2, 5, 6, 8]), tf.zeros([2, 5, 6, 8]))).toThrow(/z must be the convolution's output/);
      expect(() => call(tf.zeros([2, 6, 6, 8]), tf.zeros([2, 3, 3, 8]))).toThrow(/dy and z must have the same shape/);
    });
  });
});
