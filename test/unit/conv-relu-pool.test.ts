import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/shared/core/backend.js';
import { CONV_RELU_POOL, CONV_RELU_POOL_GRAD, convReluPool, type ConvReluPoolAttrs } from '../../src/shared/kernels/conv-relu-pool.js';
import { relError } from '../helpers/conv-reference.js';
import { randomFloats } from '../helpers/random.js';

// Issue #17: a Conv2D(bias, ReLU) → 2×2 max pool block runs as one op in training on wasm. Its value and its three
// gradients must equal the unfused layers' on the cpu backend (and on wasm without the op) within 1e-4 relative, for
// every route its convolution takes and for windows whose maximum is a ReLU zero.

interface Case {
  name: string;
  x: [number, number, number, number];
  filter: [number, number, number, number];
  attrs: ConvReluPoolAttrs;
  /** Shifts the bias down so that most activations are ReLU zeros: all-zero windows and ties. */
  negativeBias?: boolean;
}

const CASES: Case[] = [
  { name: "cnn's conv1 (direct kernel, 26×26 → 13×13)", x: [3, 28, 28, 1], filter: [3, 3, 1, 32], attrs: { strides: [1, 1], pad: 'valid' } },
  { name: "cnn's conv2 (Winograd with 5×5 tiles over the 10×10 the windows read of its 11×11 output)", x: [3, 13, 13, 32], filter: [3, 3, 32, 64], attrs: { strides: [1, 1], pad: 'valid' } },
  { name: 'direct kernel, odd output (7×7 → 3×3)', x: [2, 9, 9, 1], filter: [3, 3, 1, 16], attrs: { strides: [1, 1], pad: 'valid' } },
  { name: "direct kernel, same (10×10 → 5×5: rows staged, then pooled)", x: [2, 10, 10, 1], filter: [3, 3, 1, 16], attrs: { strides: [1, 1], pad: 'same' } },
  { name: "Winograd, same, 14×14 → 7×7 (5×5 tiles: windows across tiles)", x: [2, 14, 14, 8], filter: [3, 3, 8, 16], attrs: { strides: [1, 1], pad: 'same' } },
  { name: 'Winograd, 10×10 (5×5 tiles, staged then pooled)', x: [2, 12, 12, 4], filter: [3, 3, 4, 8], attrs: { strides: [1, 1], pad: 'valid' } },
  { name: 'Winograd, 7×7 same (4×4 tiles over the 6×6 the windows read)', x: [2, 7, 7, 4], filter: [3, 3, 4, 8], attrs: { strides: [1, 1], pad: 'same' } },
  { name: '5×5 same (stock convolution)', x: [2, 10, 10, 6], filter: [5, 5, 6, 16], attrs: { strides: [1, 1], pad: 'same' } },
  { name: 'stride 2, same, odd output (stock)', x: [2, 9, 9, 4], filter: [3, 3, 4, 8], attrs: { strides: [2, 2], pad: 'same' } },
  { name: 'mostly ReLU zeros: all-zero windows and ties', x: [2, 8, 8, 4], filter: [3, 3, 4, 4], attrs: { strides: [1, 1], pad: 'same' }, negativeBias: true },
];

function inputs(c: Case) {
  const cout = c.filter[3];
  const bias = randomFloats(cout, 3).map((v) => (c.negativeBias ? v - 2 : v));
  return {
    x: randomFloats(c.x.reduce((a, b) => a * b), 1),
    filter: randomFloats(c.filter.reduce((a, b) => a * b), 2),
    bias,
  };
}

/** The block as tfjs-layers runs it: conv2d, add, relu, maxPool; its value and d/d(x, filter, bias) of Σ value·dy. */
function unfused(c: Case, v: ReturnType<typeof inputs>, dy: Float32Array): Float32Array[] {
  return tf.tidy(() => {
    const f = (x: tf.Tensor, filter: tf.Tensor, bias: tf.Tensor) =>
      tf.maxPool(tf.relu(tf.add<tf.Tensor4D>(tf.conv2d(x as tf.Tensor4D, filter as tf.Tensor4D, c.attrs.strides, c.attrs.pad), bias)), 2, 2, 'valid');
    const args = [tf.tensor(v.x, c.x), tf.tensor(v.filter, c.filter), tf.tensor1d(v.bias)] as const;
    const value = f(...args);
    const grads = tf.grads((x, filter, bias) => tf.sum(tf.mul(f(x!, filter!, bias!), tf.tensor(dy, value.shape))))([...args]);
    return [value, ...grads].map((t) => t.dataSync() as Float32Array);
  });
}

function fused(c: Case, v: ReturnType<typeof inputs>, dy: Float32Array, grads = { x: true, weights: true }): Float32Array[] {
  return tf.tidy(() => {
    const f = (x: tf.Tensor, filter: tf.Tensor, bias: tf.Tensor) =>
      convReluPool(x as tf.Tensor4D, filter as tf.Tensor4D, bias as tf.Tensor1D, c.attrs, grads);
    const args = [tf.tensor(v.x, c.x), tf.tensor(v.filter, c.filter), tf.tensor1d(v.bias)] as const;
    const value = f(...args);
    const g = tf.grads((x, filter, bias) => tf.sum(tf.mul(f(x!, filter!, bias!), tf.tensor(dy, value.shape))))([...args]);
    return [value, ...g].map((t) => t.dataSync() as Float32Array);
  });
}

describe('convReluPool (kernels/conv-relu-pool.ts)', () => {
  beforeAll(async () => {
    await initBackend('wasm');
  });

  describe.each(CASES.map((c) => [c.name, c] as const))('%s', (_name, c) => {
    const v = inputs(c);
    const pooledSize = (): number => tf.tidy(() => tf.maxPool(tf.conv2d(tf.zeros(c.x) as tf.Tensor4D, tf.zeros(c.filter) as tf.Tensor4D, c.attrs.strides, c.attrs.pad), 2, 2, 'valid').size);

    it('equals conv2d → add → relu → maxPool on cpu, value and the gradients of x, filter and bias', async () => {
      const dy = randomFloats(pooledSize(), 4);
      await tf.setBackend('cpu');
      const want = unfused(c, v, dy);
      await tf.setBackend('wasm');
      const got = fused(c, v, dy);
      const unfusedWasm = unfused(c, v, dy);
      ['value', 'dx', 'dFilter', 'dBias'].forEach((what, i) => {
        expect(got[i]!.length, what).toBe(want[i]!.length);
        expect(relError(got[i]!, want[i]!), `${what} vs cpu`).toBeLessThan(1e-4);
        expect(relError(got[i]!, unfusedWasm[i]!), `${what} vs wasm unfused`).toBeLessThan(1e-4);
      });
      if (c.negativeBias) {
        const zeros = got[0]!.filter((p) => p === 0).length;
        expect(zeros, 'windows whose maximum is a ReLU zero').toBeGreaterThan(got[0]!.length / 4);
      }
    });

    it('treats an input whose gradient is off as a constant, and leaks no tensor', () => {
      const dy = randomFloats(pooledSize(), 5);
      const all = fused(c, v, dy);
      const before = tf.memory().numTensors;
      const noX = fused(c, v, dy, { x: false, weights: true });
      const noWeights = fused(c, v, dy, { x: true, weights: false });
      expect(tf.memory().numTensors).toBe(before);
      expect(noX[1]!.every((g) => g === 0)).toBe(true);
      expect([...noX[2]!]).toEqual([...all[2]!]);
      expect([...noX[3]!]).toEqual([...all[3]!]);
      expect([...noWeights[1]!]).toEqual([...all[1]!]);
      expect(noWeights[2]!.every((g) => g === 0) && noWeights[3]!.every((g) => g === 0)).toBe(true);
    });
  });

  // The direct kernel computes the row no window covers with dy = 0; Winograd's tiles cover only the windows' part and
  // check the input row and column only that row and column read (winograd.c poison_uncovered).
  it.each([
    ['the direct kernel', 'direct kernel, odd output', 'row'],
    ['Winograd, a row', "cnn's conv2", 'row'],
    ['Winograd, a column', "cnn's conv2", 'column'],
  ] as const)('makes the filter gradient non-finite, as the unfused layers do, from a NaN that only a row or column no window covers reads: %s', async (_label, prefix, where) => {
    const c = CASES.find((k) => k.name.startsWith(prefix))!;
    const v = inputs(c);
    // A valid 3×3 convolution of an odd side H: output row H - 3 has no window, and x's last row (column) reaches no
    // other output. NaN in image 0's last row, or in its last column.
    const [h, w, ch] = [c.x[1], c.x[2], c.x[3]];
    for (let i = 0; i < h * w * ch; i++) {
      const [row, col] = [Math.floor(i / (w * ch)), Math.floor(i / ch) % w];
      if (where === 'row' ? row === h - 1 : col === w - 1) v.x[i] = NaN;
    }
    const dFilter = () => tf.tidy(() => {
      const [x, filter, bias] = [tf.tensor4d(v.x, c.x), tf.tensor4d(v.filter, c.filter), tf.tensor1d(v.bias)];
      const f = (w: tf.Tensor) => tf.getBackend() === 'wasm'
        ? convReluPool(x, w as tf.Tensor4D, bias, c.attrs, { x: false, weights: true })
        : tf.maxPool(tf.relu(tf.add<tf.Tensor4D>(tf.conv2d(x, w as tf.Tensor4D, 1, 'valid'), bias)), 2, 2, 'valid');
      return tf.grad((w: tf.Tensor) => tf.sum(f(w)))(filter).dataSync();
    });
    await tf.setBackend('cpu');
    const want = dFilter();
    await tf.setBackend('wasm');
    const got = dFilter();
    // The NaN guard (NON_FINITE_GRADIENT) must stop the step either way. Which entries are NaN differs: the layers
    // take ReLU's gradient as dy · step(y), NaN wherever y is, while the op's mask is pooled > 0.
    expect(want.some((g) => Number.isNaN(g))).toBe(true);
    expect(got.some((g) => Number.isNaN(g))).toBe(true);
  });

  it('gives zero gradients for an output of one row (no window: the pooled output is empty)', async () => {
    const c: Case = { name: 'one output row', x: [2, 3, 9, 4], filter: [3, 3, 4, 8], attrs: { strides: [1, 1], pad: 'valid' } };
    const v = inputs(c);
    const out = fused(c, v, new Float32Array(0));
    expect(out[0]!.length).toBe(0);
    for (const grad of out.slice(1)) expect(grad.length > 0 && grad.every((g) => g === 0)).toBe(true);
  });

  it('pools NaN activations as the cpu backend does: a NaN is never the maximum, a window of NaN pools to -Infinity', async () => {
    const c = CASES[0]!;
    const v = inputs(c);
    // Image 0's rows 4–6 become NaN from x's row 5 on (its 3×3 windows), row 10's NaN only at column 10 and around.
    v.x.fill(NaN, 5 * 28, 6 * 28);
    v.x[10 * 28 + 10] = NaN;
    const run = () => tf.tidy(() => tf.maxPool(tf.relu(tf.add<tf.Tensor4D>(tf.conv2d(tf.tensor4d(v.x, c.x), tf.tensor4d(v.filter, c.filter), 1, 'valid'), tf.tensor1d(v.bias))), 2, 2, 'valid').dataSync());
    await tf.setBackend('cpu');
    const want = run();
    await tf.setBackend('wasm');
    const got = tf.tidy(() => convReluPool(tf.tensor4d(v.x, c.x), tf.tensor4d(v.filter, c.filter), tf.tensor1d(v.bias), c.attrs, { x: true, weights: true }).dataSync());
    expect(want.some((p) => p === -Infinity) && want.every((p) => !Number.isNaN(p))).toBe(true);
    expect(got.every((p, i) => Object.is(p, want[i]) || Math.abs(p - want[i]!) <= 1e-4 * Math.max(1, Math.abs(want[i]!)))).toBe(true);
  });

  it('its forward kernel checks shapes and dtypes as conv2d does', () => {
    const run = (x: number[], filter: number[], bias: number[], dtype: 'float32' | 'int32' = 'float32') => () => tf.tidy(() =>
      tf.engine().runKernel(CONV_RELU_POOL, { x: tf.zeros(x), filter: tf.zeros(filter, dtype), bias: tf.zeros(bias) }, { strides: [1, 1], pad: 'same' }));
    expect(run([1, 4, 4, 4], [3, 3, 4, 8], [8])).not.toThrow();
    expect(run([1, 4, 4, 4], [3, 3, 2, 8], [8])).toThrow(/depth of input/);
    expect(run([1, 4, 4, 4], [3, 3, 4, 8], [4])).toThrow(/one value per filter/);
    expect(run([1, 4, 4, 4], [3, 3, 4, 8], [1, 8])).toThrow(/one value per filter/);
    expect(run([1, 4, 4, 4], [3, 3, 4, 8], [8], 'int32')).toThrow(/float32/);
    expect(run([4, 4, 4], [3, 3, 4, 8], [8])).toThrow(/rank 4/);
    // A 1×1 convolution output has no 2×2 window: empty outputs of the pooled shapes.
    const shapes = tf.tidy(() => (tf.engine().runKernel(CONV_RELU_POOL, { x: tf.ones([2, 3, 3, 4]), filter: tf.ones([3, 3, 4, 8]), bias: tf.ones([8]) },
      { strides: [1, 1], pad: 'valid' }) as tf.Tensor[]).map((t) => t.shape));
    expect(shapes).toEqual([[2, 0, 0, 8], [2, 0, 0, 2]]);
  });

  it('its gradient kernel checks shapes, dtypes and channels as a stock kernel does', () => {
    const run = (dy: number[], pooled: number[], codes: number[], x: number[], filter: number[], dtypes: { codes?: 'int32' | 'float32'; x?: 'int32' | 'float32' } = {}) => () => tf.tidy(() =>
      tf.engine().runKernel(CONV_RELU_POOL_GRAD, { dy: tf.zeros(dy), x: tf.zeros(x, dtypes.x ?? 'float32'), filter: tf.zeros(filter), pooled: tf.zeros(pooled), codes: tf.zeros(codes, dtypes.codes ?? 'int32') },
        { strides: [1, 1], pad: 'same', inputGrad: true, filterGrad: true } as never));
    expect(run([1, 2, 2, 4], [1, 2, 2, 4], [1, 2, 2, 1], [1, 4, 4, 4], [3, 3, 4, 4])).not.toThrow();
    expect(run([1, 2, 2, 4], [1, 2, 2, 4], [1, 2, 2, 1], [1, 5, 5, 4], [3, 3, 4, 4])).not.toThrow();
    expect(run([1, 2, 3, 4], [1, 2, 2, 4], [1, 2, 2, 1], [1, 4, 4, 4], [3, 3, 4, 4])).toThrow(/dy must have the pooled shape/);
    expect(run([1, 2, 2, 4], [1, 2, 2, 8], [1, 2, 2, 1], [1, 4, 4, 4], [3, 3, 4, 4])).toThrow(/pooled must have the pooled shape/);
    expect(run([1, 2, 2, 4], [1, 2, 2, 4], [1, 2, 2, 4], [1, 4, 4, 4], [3, 3, 4, 4])).toThrow(/codes must be/);
    expect(run([1, 2, 2, 4], [1, 2, 2, 4], [1, 2, 2, 1], [1, 4, 4, 4], [3, 3, 4, 4], { codes: 'float32' })).toThrow(/int32/);
    expect(run([1, 2, 2, 6], [1, 2, 2, 6], [1, 2, 2, 1], [1, 4, 4, 4], [3, 3, 4, 6])).toThrow(/multiple of 4/);
    expect(run([1, 2, 2, 4], [1, 2, 2, 4], [1, 2, 2, 1], [1, 4, 4, 4], [3, 3, 2, 4])).toThrow(/depth of input/);
    expect(run([1, 2, 2, 4], [1, 2, 2, 4], [1, 2, 2, 1], [1, 4, 4, 4], [3, 3, 4, 4], { x: 'int32' })).toThrow(/float32/);
    expect(run([2, 2, 4], [2, 2, 4], [2, 2, 1], [4, 4, 4], [3, 3, 4, 4])).toThrow(/rank 4/);
    // Explicit padding never reaches the kernels through the op; runKernel with it is refused, forward and backward.
    const explicit = [[0, 0], [0, 2], [0, 2], [0, 0]];
    expect(() => tf.tidy(() => tf.engine().runKernel(CONV_RELU_POOL, { x: tf.zeros([1, 6, 6, 1]), filter: tf.zeros([3, 3, 1, 16]), bias: tf.zeros([16]) },
      { strides: [1, 1], pad: explicit } as never))).toThrow(/pad must be 'valid' or 'same'/);
    expect(() => tf.tidy(() => tf.engine().runKernel(CONV_RELU_POOL_GRAD, { dy: tf.zeros([1, 3, 3, 16]), x: tf.zeros([1, 6, 6, 1]), filter: tf.zeros([3, 3, 1, 16]),
      pooled: tf.zeros([1, 3, 3, 16]), codes: tf.zeros([1, 3, 3, 4], 'int32') }, { strides: [1, 1], pad: explicit, inputGrad: false, filterGrad: true } as never))).toThrow(/pad must be 'valid' or 'same'/);
    expect(() => tf.tidy(() => tf.engine().runKernel(CONV_RELU_POOL_GRAD, { dy: tf.zeros([1, 2, 2, 4]), x: tf.zeros([1, 4, 4, 4]), filter: tf.zeros([3, 3, 4, 4]) },
      { strides: [1, 1], pad: 'same', inputGrad: true, filterGrad: true } as never))).toThrow(/needs the pooled output and its codes/);
  });
});
