import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/shared/core/backend.js';
import { randomFloats } from '../helpers/random.js';

// Issue #15 item 7: every kernel we register in front of tfjs-backend-wasm checks its inputs' shapes, dtypes and
// attributes as stock tfjs does, and throws a plain Error as util.assert does, before it touches wasm memory. Stock
// tfjs checks most of these in its ops (tf.conv2dTranspose, tf.matMul) or its cpu kernels; the rest (dy's spatial
// size and batch) it checks nowhere, and its cpu kernels then read past dy (NaN) where ours would read wasm memory.

type Dtype = 'float32' | 'int32';
interface Input { shape: number[]; dtype?: Dtype }

interface Case {
  name: string;
  kernel: string;
  inputs: Record<string, Input>;
  attrs: object;
  /** What our wasm kernel must throw. */
  message: RegExp;
  /**
   * How stock tfjs refuses the same call on the cpu backend: the same kernel call ('kernel'), a public op that
   * checks before its kernel, or 'unchecked' where stock tfjs has no check (its kernel reads past an input).
   */
  stock: 'kernel' | 'unchecked' | (() => unknown);
}

function tensors(inputs: Record<string, Input>, seed: number): Record<string, tf.Tensor> {
  return Object.fromEntries(Object.entries(inputs).map(([name, { shape, dtype = 'float32' }], i) => {
    const values = randomFloats(shape.reduce((a, b) => a * b, 1), seed + i);
    return [name, dtype === 'int32' ? tf.tensor(Int32Array.from(values, (v) => Math.round(v * 10)), shape, 'int32') : tf.tensor(values, shape)];
  }));
}

function runKernel(kernel: string, inputs: Record<string, Input>, attrs: object): Float32Array {
  return tf.tidy(() => (tf.engine().runKernel(kernel, tensors(inputs, 7), attrs as tf.NamedAttrMap) as tf.Tensor).dataSync() as Float32Array);
}

const conv = { strides: [1, 1], pad: 'valid', dataFormat: 'NHWC', dimRoundingMode: undefined };
// x [2,6,6,1] * filter [3,3,1,4], valid, strides 1 → dy [2,4,4,4].
const convInput = (dy: Input, filter: Input, attrs: object = {}): Pick<Case, 'kernel' | 'inputs' | 'attrs'> =>
  ({ kernel: 'Conv2DBackpropInput', inputs: { dy, filter }, attrs: { ...conv, inputShape: [2, 6, 6, 1], ...attrs } });
const convFilter = (x: Input, dy: Input, attrs: object = {}): Pick<Case, 'kernel' | 'inputs' | 'attrs'> =>
  ({ kernel: 'Conv2DBackpropFilter', inputs: { x, dy }, attrs: { ...conv, filterShape: [3, 3, 1, 4], ...attrs } });
// input [2,6,6,3], window 2, strides 2, valid → dy [2,3,3,3].
const maxPoolGrad = (dy: Input, input: Input, attrs: object = {}): Pick<Case, 'kernel' | 'inputs' | 'attrs'> =>
  ({ kernel: 'MaxPoolGrad', inputs: { dy, input, output: { shape: [2, 3, 3, 3] } }, attrs: { filterSize: 2, strides: 2, pad: 'valid', ...attrs } });
const matMul = (a: number[], b: number[], transposeA: boolean, transposeB: boolean): Pick<Case, 'kernel' | 'inputs' | 'attrs'> =>
  ({ kernel: 'BatchMatMul', inputs: { a: { shape: a }, b: { shape: b } }, attrs: { transposeA, transposeB } });

const zeros = (shape: [number, number, number, number]): tf.Tensor4D => tf.zeros(shape);

const CASES: Case[] = [
  // The bug: inner dimensions 3 vs 5 (and 4 vs 5) multiplied anyway, reading past one operand.
  { name: 'BatchMatMul, transposeB, inner 3 vs 5', ...matMul([4, 3], [4, 5], false, true), message: /Error in matMul: inner shapes \(3\) and \(5\)/, stock: 'kernel' },
  { name: 'BatchMatMul, transposeA, inner 4 vs 5', ...matMul([4, 3], [5, 2], true, false), message: /Error in matMul: inner shapes \(4\) and \(5\)/, stock: () => tf.matMul(tf.zeros([4, 3]), tf.zeros([5, 2]), true, false) },
  { name: 'BatchMatMul, both transposed, batch 1 rank 3', ...matMul([1, 6, 3], [1, 2, 5], true, true), message: /Error in matMul: inner shapes \(6\) and \(5\)/, stock: 'kernel' },
  // Handed to the stock wasm kernel, which refuses it (the cpu backend multiplies int32).
  { name: 'BatchMatMul, int32 operand', kernel: 'BatchMatMul', inputs: { a: { shape: [4, 3], dtype: 'int32' }, b: { shape: [4, 3] } }, attrs: { transposeA: false, transposeB: true }, message: /BatchMatMul for non non-float32 tensors/, stock: 'unchecked' },

  { name: 'Conv2DBackpropInput, dy channels 3 vs filter 4', ...convInput({ shape: [2, 4, 4, 3] }, { shape: [3, 3, 1, 4] }), message: /Error in conv2dDerInput: depth of output \(3\) must match output depth for filter 4/, stock: () => tf.conv2dTranspose(zeros([2, 4, 4, 3]), zeros([3, 3, 1, 4]), [2, 6, 6, 1], 1, 'valid') },
  { name: 'Conv2DBackpropInput, filter in-depth 2 vs input 1', ...convInput({ shape: [2, 4, 4, 4] }, { shape: [3, 3, 2, 4] }), message: /Error in conv2dDerInput: depth of input \(1\) must match input depth for filter 2/, stock: () => tf.conv2dTranspose(zeros([2, 4, 4, 4]), zeros([3, 3, 2, 4]), [2, 6, 6, 1], 1, 'valid') },
  { name: 'Conv2DBackpropInput, dy spatial 3x3 instead of 4x4', ...convInput({ shape: [2, 3, 3, 4] }, { shape: [3, 3, 1, 4] }), message: /Error in conv2dDerInput: dy must have shape \[2,4,4,4\].*but got \[2,3,3,4\]/, stock: 'unchecked' },
  { name: 'Conv2DBackpropInput, dy batch 1 instead of 2', ...convInput({ shape: [1, 4, 4, 4] }, { shape: [3, 3, 1, 4] }), message: /dy must have shape \[2,4,4,4\]/, stock: 'unchecked' },
  { name: 'Conv2DBackpropInput, dy rank 3', ...convInput({ shape: [4, 4, 4] }, { shape: [3, 3, 1, 4] }), message: /Error in conv2dDerInput: dy must be rank 4/, stock: 'unchecked' },
  { name: 'Conv2DBackpropInput, filter rank 3', ...convInput({ shape: [2, 4, 4, 4] }, { shape: [3, 3, 4] }), message: /Error in conv2dDerInput: filter must be rank 4/, stock: () => tf.conv2dTranspose(zeros([2, 4, 4, 4]), tf.zeros([3, 3, 4]) as unknown as tf.Tensor4D, [2, 6, 6, 1], 1, 'valid') },
  { name: 'Conv2DBackpropInput, inputShape length 3', ...convInput({ shape: [2, 4, 4, 4] }, { shape: [3, 3, 1, 4] }, { inputShape: [6, 6, 1] }), message: /Error in conv2dDerInput: inputShape must be rank 4/, stock: () => tf.conv2dTranspose(zeros([2, 4, 4, 4]), zeros([3, 3, 1, 4]), [6, 6, 1], 1, 'valid') },
  { name: 'Conv2DBackpropInput, int32 dy', ...convInput({ shape: [2, 4, 4, 4], dtype: 'int32' }, { shape: [3, 3, 1, 4] }), message: /Error in conv2dDerInput: dy must be float32/, stock: 'unchecked' },
  { name: 'Conv2DBackpropInput, fractional pad with a rounding mode', ...convInput({ shape: [2, 4, 4, 4] }, { shape: [3, 3, 1, 4] }, { pad: 1.5, dimRoundingMode: 'floor' }), message: /Error in conv2dDerInput: pad must be an integer when using dimRoundingMode floor/, stock: () => tf.conv2dTranspose(zeros([2, 4, 4, 4]), zeros([3, 3, 1, 4]), [2, 6, 6, 1], 1, 1.5, 'floor') },
  { name: 'Conv2DBackpropInput, strides 0', ...convInput({ shape: [2, 4, 4, 4] }, { shape: [3, 3, 1, 4] }, { strides: [0, 0] }), message: /Error in conv2dDerInput: .*every size must be a positive whole number/, stock: 'unchecked' },

  { name: 'Conv2DBackpropFilter, dy spatial 3x3 instead of 4x4', ...convFilter({ shape: [2, 6, 6, 1] }, { shape: [2, 3, 3, 4] }), message: /Error in conv2dDerFilter: dy must have shape \[2,4,4,4\].*but got \[2,3,3,4\]/, stock: 'kernel' },
  { name: 'Conv2DBackpropFilter, dy batch 1 instead of 2', ...convFilter({ shape: [2, 6, 6, 1] }, { shape: [1, 4, 4, 4] }), message: /dy must have shape \[2,4,4,4\]/, stock: 'kernel' },
  { name: 'Conv2DBackpropFilter, x channels 2 vs filterShape 1', ...convFilter({ shape: [2, 6, 6, 2] }, { shape: [2, 4, 4, 4] }), message: /Error in conv2dDerFilter: depth of input 2\) must match input depth in filter \(1/, stock: 'unchecked' },
  { name: 'Conv2DBackpropFilter, dy channels 3 vs filterShape 4', ...convFilter({ shape: [2, 6, 6, 1] }, { shape: [2, 4, 4, 3] }), message: /Error in conv2dDerFilter: depth of dy \(3\) must match output depth for filter \(4\)/, stock: 'kernel' },
  { name: 'Conv2DBackpropFilter, x rank 3', ...convFilter({ shape: [6, 6, 1] }, { shape: [2, 4, 4, 4] }), message: /Error in conv2dDerFilter: x must be rank 4/, stock: 'unchecked' },
  // tfjs-core's conv2DBackpropFilter op (not exported) checks this; its cpu kernel does not.
  { name: 'Conv2DBackpropFilter, filterShape length 3', ...convFilter({ shape: [2, 6, 6, 1] }, { shape: [2, 4, 4, 4] }, { filterShape: [3, 3, 4] }), message: /Error in conv2dDerFilter: filterShape must be rank 4/, stock: 'unchecked' },
  { name: 'Conv2DBackpropFilter, int32 x', ...convFilter({ shape: [2, 6, 6, 1], dtype: 'int32' }, { shape: [2, 4, 4, 4] }), message: /Error in conv2dDerFilter: x must be float32/, stock: 'unchecked' },
  { name: 'Conv2DBackpropFilter, window larger than a valid input', ...convFilter({ shape: [2, 2, 2, 1] }, { shape: [2, 1, 1, 4] }), message: /Error in conv2dDerFilter: .*every size must be a positive whole number/, stock: 'unchecked' },

  // The Winograd route (3x3, stride 1, channels in fours): x [2,6,6,8] * filter [3,3,8,8], valid → dy [2,4,4,8].
  { name: 'Conv2D, filter in-depth 4 vs input 8 (shapes the Winograd route takes once they agree)', kernel: 'Conv2D', inputs: { x: { shape: [2, 6, 6, 8] }, filter: { shape: [3, 3, 4, 8] } }, attrs: { ...conv, dilations: [1, 1] }, message: /Error in conv2d: depth of input \(8\) must match input depth for filter 4/, stock: () => tf.conv2d(zeros([2, 6, 6, 8]), zeros([3, 3, 4, 8]), 1, 'valid') },
  { name: 'Conv2DBackpropInput (Winograd route), dy spatial 3x3 instead of 4x4', kernel: 'Conv2DBackpropInput', inputs: { dy: { shape: [2, 3, 3, 8] }, filter: { shape: [3, 3, 8, 8] } }, attrs: { ...conv, inputShape: [2, 6, 6, 8] }, message: /Error in conv2dDerInput: dy must have shape \[2,4,4,8\]/, stock: 'unchecked' },
  { name: 'Conv2DBackpropFilter (Winograd route), dy batch 1 instead of 2', kernel: 'Conv2DBackpropFilter', inputs: { x: { shape: [2, 6, 6, 8] }, dy: { shape: [1, 4, 4, 8] } }, attrs: { ...conv, filterShape: [3, 3, 8, 8] }, message: /Error in conv2dDerFilter: dy must have shape \[2,4,4,8\]/, stock: 'kernel' },

  { name: 'MaxPoolGrad, dy spatial 2x2 instead of 3x3', ...maxPoolGrad({ shape: [2, 2, 2, 3] }, { shape: [2, 6, 6, 3] }), message: /Error in maxPoolGrad: dy must have shape \[2,3,3,3\].*but got \[2,2,2,3\]/, stock: 'kernel' },
  { name: 'MaxPoolGrad, dy channels 2 vs input 3', ...maxPoolGrad({ shape: [2, 3, 3, 2] }, { shape: [2, 6, 6, 3] }), message: /dy must have shape \[2,3,3,3\]/, stock: 'kernel' },
  { name: 'MaxPoolGrad, dy batch 1 instead of 2', ...maxPoolGrad({ shape: [1, 3, 3, 3] }, { shape: [2, 6, 6, 3] }), message: /dy must have shape \[2,3,3,3\]/, stock: 'kernel' },
  { name: 'MaxPoolGrad, input rank 3', ...maxPoolGrad({ shape: [2, 3, 3, 3] }, { shape: [6, 6, 3] }), message: /Error in maxPoolGrad: input must be rank 4/, stock: 'unchecked' },
  { name: 'MaxPoolGrad, int32 dy', ...maxPoolGrad({ shape: [2, 3, 3, 3], dtype: 'int32' }, { shape: [2, 6, 6, 3] }), message: /Error in maxPoolGrad: dy must be float32/, stock: 'unchecked' },

  { name: 'ReLU gradient, dy and x of different shapes', kernel: 'MnistDdpReluGrad', inputs: { dy: { shape: [4, 8] }, x: { shape: [4, 6] } }, attrs: {}, message: /Error in reluGrad: dy and x must have the same shape/, stock: () => tf.mul(tf.zeros([4, 8]), tf.step(tf.zeros([4, 6]))) },
  { name: 'ReLU gradient, int32 x', kernel: 'MnistDdpReluGrad', inputs: { dy: { shape: [4, 8] }, x: { shape: [4, 8], dtype: 'int32' } }, attrs: {}, message: /Error in reluGrad: x must be float32/, stock: 'unchecked' },
];

describe('wasm training kernels validate their inputs like stock tfjs (issue #15)', () => {
  beforeAll(async () => {
    await initBackend('wasm');
  });

  it.each(CASES.map((c) => [c.name, c] as const))('%s: throws before touching memory', async (_name, c) => {
    await tf.setBackend('wasm');
    const before = tf.memory().numBytes;
    expect(() => runKernel(c.kernel, c.inputs, c.attrs)).toThrow(c.message);
    expect(tf.memory().numBytes).toBe(before);
    const stock = c.stock;
    if (stock === 'unchecked') return;
    await tf.setBackend('cpu');
    expect(() => (stock === 'kernel' ? runKernel(c.kernel, c.inputs, c.attrs) : tf.tidy(() => stock() as tf.Tensor))).toThrow(Error);
  });

  it('stock tfjs does not check what the "unchecked" cases check: its cpu kernel reads past dy', async () => {
    await tf.setBackend('cpu');
    const got = runKernel('Conv2DBackpropInput', { dy: { shape: [2, 3, 3, 4] }, filter: { shape: [3, 3, 1, 4] } }, { ...conv, inputShape: [2, 6, 6, 1] });
    expect(got.some(Number.isNaN)).toBe(true);
  });

  it('valid inputs on the same paths still match cpu, and fast paths hand odd attributes to the stock kernel', async () => {
    const run = (): Float32Array[] => [
      runKernel('BatchMatMul', { a: { shape: [5, 3] }, b: { shape: [4, 3] } }, { transposeA: false, transposeB: true }),
      runKernel('BatchMatMul', { a: { shape: [5, 3] }, b: { shape: [5, 4] } }, { transposeA: true, transposeB: false }),
      runKernel('BatchMatMul', { a: { shape: [1, 6, 3] }, b: { shape: [1, 2, 6] } }, { transposeA: true, transposeB: true }),
      runKernel('Conv2DBackpropInput', { dy: { shape: [2, 4, 4, 4] }, filter: { shape: [3, 3, 1, 4] } }, { ...conv, inputShape: [2, 6, 6, 1] }),
      runKernel('Conv2DBackpropFilter', { x: { shape: [2, 6, 6, 1] }, dy: { shape: [2, 4, 4, 4] } }, { ...conv, filterShape: [3, 3, 1, 4] }),
      runKernel('Conv2DBackpropInput', { dy: { shape: [2, 3, 3, 4] }, filter: { shape: [3, 3, 2, 4] } }, { ...conv, strides: [2, 2], pad: 1, dimRoundingMode: 'floor', inputShape: [2, 6, 6, 2] }),
      runKernel('Conv2D', { x: { shape: [2, 6, 6, 8] }, filter: { shape: [3, 3, 8, 8] } }, { ...conv, dilations: [1, 1] }),
      runKernel('Conv2D', { x: { shape: [2, 6, 6, 8] }, filter: { shape: [3, 3, 8, 8] } }, { ...conv, dilations: [1, 1], pad: 1, dimRoundingMode: 'floor' }),
      runKernel('Conv2D', { x: { shape: [2, 6, 6, 8] }, filter: { shape: [3, 3, 8, 8] } }, { ...conv, dilations: [1, 1], strides: [2, 2] }),
      // Empty outputs stay the stock kernel's: batch 0, and a 'valid' window larger than the input.
      runKernel('Conv2D', { x: { shape: [0, 6, 6, 8] }, filter: { shape: [3, 3, 8, 8] } }, { ...conv, dilations: [1, 1], pad: 'same' }),
      runKernel('Conv2D', { x: { shape: [1, 2, 2, 4] }, filter: { shape: [3, 3, 4, 4] } }, { ...conv, dilations: [1, 1] }),
      runKernel('MaxPoolGrad', { dy: { shape: [2, 3, 3, 3] }, input: { shape: [2, 6, 6, 3] }, output: { shape: [2, 3, 3, 3] } }, { filterSize: 2, strides: 2, pad: 'valid' }),
      // Tile by 0 is an empty tensor (stock kernel); the block-repeat fast path needs whole counts ≥ 1.
      runKernel('Tile', { x: { shape: [1, 3] } }, { reps: [0, 1] }),
      runKernel('Tile', { x: { shape: [1, 3] } }, { reps: [4, 1] }),
    ];
    await tf.setBackend('wasm');
    const got = run();
    await tf.setBackend('cpu');
    const cpu = run();
    got.forEach((g, i) => {
      expect(g.length, `output ${i}`).toBe(cpu[i]!.length);
      g.forEach((v, j) => expect(Math.abs(v - cpu[i]![j]!), `output ${i}[${j}]`).toBeLessThan(1e-4 * Math.max(1, Math.abs(cpu[i]![j]!))));
    });
    await tf.setBackend('wasm');
    expect(tf.tidy(() => tf.grad((t: tf.Tensor) => tf.sum(tf.relu(t)))(tf.tensor1d([-1, 2])).dataSync())).toEqual(Float32Array.from([0, 1]));
  });
});
