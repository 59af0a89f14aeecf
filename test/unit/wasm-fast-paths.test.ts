import * as tf from '@tensorflow/tfjs';
import { afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { initBackend } from '../../src/shared/core/backend.js';
import { assertWasmBackend } from '../../src/shared/kernels/heap.js';
import { nativeKernels } from '../../src/shared/kernels/native.js';
import { randomFloats } from '../helpers/random.js';

// Issue #17: the batch-norm fast paths on wasm (Mean and Sum over all but the last axis, FusedBatchNorm with
// per-channel parameters, channel-wise Add / Multiply / Sub / RealDiv, same-dtype Cast) match the cpu backend, take only
// the calls they are meant for (everything else reaches the stock kernel, checked by counting the native calls), and
// leak no tensors or bytes.

type NativeMethod = 'meanRows' | 'sumRows' | 'batchNorm' | 'channelOp';

interface Output { shape: number[]; dtype: string; values: number[] }

const read = (t: tf.Tensor): Output => ({ shape: t.shape, dtype: t.dtype, values: Array.from(t.dataSync()) });

/** Runs fn in tf.tidy and reads its outputs back, disposing them. */
function evaluate(fn: () => tf.Tensor[]): Output[] {
  const outputs = tf.tidy(fn);
  const values = outputs.map(read);
  tf.dispose(outputs);
  return values;
}

/** fn on wasm (counting calls of one native kernel) and on cpu; both run inside tf.tidy. */
async function onBoth(method: NativeMethod, fn: () => tf.Tensor): Promise<{ wasm: Output; cpu: Output; nativeCalls: number }> {
  await tf.setBackend('wasm');
  const backend = tf.backend();
  assertWasmBackend(backend);
  const spy = vi.spyOn(nativeKernels(backend), method);
  const [wasm] = evaluate(() => [fn()]);
  const nativeCalls = spy.mock.calls.length;
  spy.mockRestore();
  await tf.setBackend('cpu');
  const [cpu] = evaluate(() => [fn()]);
  await tf.setBackend('wasm');
  return { wasm: wasm!, cpu: cpu!, nativeCalls };
}

/** Largest |a − b| over the largest |b| (1 at least): the error relative to the output's scale. */
function scaledError(a: readonly number[], b: readonly number[]): number {
  let num = 0;
  let den = 1;
  b.forEach((v, i) => {
    num = Math.max(num, Math.abs(a[i]! - v));
    den = Math.max(den, Math.abs(v));
  });
  return num / den;
}

const size = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);
const tensor = (shape: number[], seed: number, lo = -1, hi = 1): tf.Tensor => tf.tensor(randomFloats(size(shape), seed, lo, hi), shape);

beforeAll(async () => {
  await initBackend('wasm');
});

afterEach(() => {
  vi.restoreAllMocks();
});

describe('Mean and Sum over every axis but the last', () => {
  // Channel counts 9 (4 + 4 + 1: blocks of 4 and a scalar tail), 21 (16 + 4 + 1) and 32 (two blocks of 16); more
  // than 64 rows, so the float32 partial sums are folded into float64 more than once. Offset inputs (mean 3) make the
  // rounding of the sum visible.
  it.each([
    { shape: [3, 5, 7, 9], axis: [0, 1, 2], keepDims: false, offset: 0 },
    { shape: [3, 5, 7, 9], axis: [2, 0, 1], keepDims: true, offset: 3 },
    { shape: [2, 13, 13, 32], axis: [0, 1, 2], keepDims: true, offset: 0 },
    { shape: [4, 33, 21], axis: [-2, 0], keepDims: false, offset: 3 },
    { shape: [64, 128], axis: [0], keepDims: false, offset: 0 },
    { shape: [65, 5], axis: 0, keepDims: true, offset: -3 },
  ])('$shape over $axis (keepDims $keepDims) matches cpu', async ({ shape, axis, keepDims, offset }) => {
    const channels = shape[shape.length - 1]!;
    const rows = size(shape) / channels;
    const values = randomFloats(size(shape), 51, offset - 1, offset + 1);
    const expectedShape = keepDims ? [...shape.slice(0, -1).map(() => 1), channels] : [channels];
    for (const [method, op] of [['meanRows', tf.mean], ['sumRows', tf.sum]] as const) {
      const { wasm, cpu, nativeCalls } = await onBoth(method, () => op(tf.tensor(values, shape), axis, keepDims));
      expect(nativeCalls, method).toBe(1);
      expect(wasm.shape).toEqual(expectedShape);
      expect(cpu.shape).toEqual(expectedShape);
      expect(wasm.dtype).toBe('float32');
      // float64 reference; the bound is a few float32 roundings of the column's magnitude (|offset| + 1).
      const divisor = method === 'meanRows' ? rows : 1;
      const reference = Array.from({ length: channels }, (_, c) => {
        let total = 0;
        for (let r = 0; r < rows; r++) total += values[r * channels + c]!;
        return total / divisor;
      });
      const bound = (8 * 2 ** -24 * (Math.abs(offset) + 1) * rows) / divisor;
      wasm.values.forEach((v, c) => expect(Math.abs(v - reference[c]!), `${method} channel ${c}`).toBeLessThan(bound));
      cpu.values.forEach((v, c) => expect(Math.abs(v - wasm.values[c]!), `${method} channel ${c} vs cpu`).toBeLessThan(2 * bound));
    }
  });

  it.each([
    { name: 'axes that are not all but the last', x: () => tensor([3, 5, 7, 9], 52), axis: [1, 2] },
    { name: 'every axis', x: () => tensor([3, 5, 7, 9], 53), axis: null },
    { name: 'a rank-1 input', x: () => tensor([9], 54), axis: 0 },
    { name: 'an int32 input', x: () => tf.tensor2d([[1, 2, 3], [4, 6, 8]], [2, 3], 'int32'), axis: 0 },
  ])('Mean of $name goes to the stock kernel and matches cpu', async ({ x, axis }) => {
    const { wasm, cpu, nativeCalls } = await onBoth('meanRows', () => tf.mean(x(), axis ?? undefined));
    expect(nativeCalls).toBe(0);
    expect(wasm.shape).toEqual(cpu.shape);
    expect(wasm.dtype).toBe(cpu.dtype);
    expect(scaledError(wasm.values, cpu.values)).toBeLessThan(1e-6);
  });
});

describe('FusedBatchNorm with per-channel parameters', () => {
  it.each([
    { x: [3, 5, 7, 9], params: [9], offset: true, scale: true },
    { x: [3, 5, 7, 9], params: [9], offset: false, scale: false },
    { x: [3, 5, 7, 9], params: [9], offset: true, scale: false },
    { x: [3, 5, 7, 9], params: [1, 1, 1, 9], offset: false, scale: true },
    { x: [2, 13, 13, 32], params: [32], offset: true, scale: true },
    { x: [64, 128], params: [128], offset: true, scale: true },
    { x: [6, 5], params: [5], offset: true, scale: true },
  ])('x $x, parameters $params (offset $offset, scale $scale) matches cpu', async ({ x, params, offset, scale }) => {
    const run = () => tf.batchNorm(
      tensor(x, 61, -3, 3), tensor(params, 62), tensor(params, 63, 0.05, 2),
      offset ? tensor(params, 64) : undefined, scale ? tensor(params, 65, -2, 2) : undefined, 1e-3,
    );
    const { wasm, cpu, nativeCalls } = await onBoth('batchNorm', run);
    expect(nativeCalls).toBe(1);
    expect(wasm.shape).toEqual(x);
    expect(cpu.shape).toEqual(x);
    // The factor scale / sqrt(variance + ε) is rounded to float32 once, then (x − mean) · factor + offset takes
    // three float32 roundings: a few ulps of the output's scale.
    expect(scaledError(wasm.values, cpu.values)).toBeLessThan(1e-6);
  });

  it('parameters that are not one value per channel go to the stock kernel and match cpu', async () => {
    const run = () => tf.batchNorm(tensor([3, 4, 9], 66), tf.tensor1d([0.5]), tf.tensor1d([2]), tf.tensor1d([0.25]), tf.tensor1d([1.5]), 1e-3);
    const { wasm, cpu, nativeCalls } = await onBoth('batchNorm', run);
    expect(nativeCalls).toBe(0);
    expect(wasm.shape).toEqual(cpu.shape);
    expect(scaledError(wasm.values, cpu.values)).toBeLessThan(1e-6);
  });
});

describe('channel-wise Add, Multiply, Sub and RealDiv', () => {
  const OPS = [['Add', tf.add], ['Multiply', tf.mul], ['Sub', tf.sub], ['RealDiv', tf.div]] as const;
  // [x, v]: v holds one value per channel of x's last axis, or one value in all; channel counts not multiples of 4;
  // v of higher rank than x (the output takes v's rank).
  const CASES: Array<[number[], number[]]> = [
    [[3, 5, 7, 9], [9]], [[3, 5, 7, 9], [1, 1, 1, 9]], [[2, 13, 13, 32], [32]], [[3, 5, 7, 9], []], [[6, 9], [1, 1]],
    [[9], [9]], [[9], [1, 1, 9]], [[5, 1], [1]], [[2, 3, 6], [1, 6]],
  ];
  for (const [name, op] of OPS) {
    it.each(CASES)(`${name} of x %j and v %j, in both orders, equals cpu exactly`, async (xShape, vShape) => {
      const x = randomFloats(size(xShape), 71, -2, 2);
      const v = randomFloats(size(vShape), 72, 0.5, 2).map((e, i) => (i % 3 === 1 ? -e : e));
      const xFirst = await onBoth('channelOp', () => op(tf.tensor(x, xShape), tf.tensor(v, vShape)));
      const vFirst = await onBoth('channelOp', () => op(tf.tensor(v, vShape), tf.tensor(x, xShape)));
      for (const { wasm, cpu, nativeCalls } of [xFirst, vFirst]) {
        expect(nativeCalls).toBe(1);
        expect(wasm.shape).toEqual(cpu.shape);
        expect(wasm.values).toEqual(cpu.values);
      }
      if (name === 'Sub' || name === 'RealDiv') expect(xFirst.wasm.values).not.toEqual(vFirst.wasm.values);
    });

    it.each([
      { what: 'v along another axis', a: () => tensor([3, 5, 7, 9], 73), b: () => tensor([7, 1], 74) },
      { what: 'equal shapes', a: () => tensor([3, 5, 7, 9], 75), b: () => tensor([3, 5, 7, 9], 76) },
      { what: 'both operands broadcast', a: () => tensor([3, 1, 7, 9], 77), b: () => tensor([1, 5, 1, 9], 78) },
      { what: 'v with more than one value per channel', a: () => tensor([3, 2, 9], 79), b: () => tensor([2, 9], 80) },
      { what: 'int32 operands', a: () => tf.tensor2d([[7, -8, 9], [10, 11, -12]], [2, 3], 'int32'), b: () => tf.tensor1d([2, 3, -5], 'int32') },
    ])(`${name} with $what goes to the stock kernel and equals cpu`, async ({ a, b }) => {
      for (const run of [() => op(a(), b()), () => op(b(), a())]) {
        const { wasm, cpu, nativeCalls } = await onBoth('channelOp', run);
        expect(nativeCalls).toBe(0);
        expect(wasm.shape).toEqual(cpu.shape);
        expect(wasm.dtype).toBe(cpu.dtype);
        expect(wasm.values).toEqual(cpu.values);
      }
    });
  }
});

describe('Cast to the same dtype', () => {
  it('shares the input memory: the result outlives its source and the memory is freed with the last owner', async () => {
    await tf.setBackend('wasm');
    const values = randomFloats(64 * 26, 81);
    const before = tf.memory();
    const source = tf.tensor2d(values, [64, 26]);
    const cast = tf.cast(source, 'float32');
    // One buffer for two tensors (tfjs counts numBytes per tensor).
    expect(tf.memory().numDataBuffers - before.numDataBuffers).toBe(1);
    source.dispose();
    expect(cast.dtype).toBe('float32');
    expect(cast.dataSync()).toEqual(values);
    cast.dispose();
    expect(tf.memory().numTensors).toBe(before.numTensors);
    expect(tf.memory().numBytes).toBe(before.numBytes);
    expect(tf.memory().numDataBuffers).toBe(before.numDataBuffers);
  });

  it.each([
    { from: 'int32', to: 'int32' }, { from: 'bool', to: 'bool' },
    { from: 'float32', to: 'int32' }, { from: 'int32', to: 'float32' },
  ] as const)('$from → $to equals cpu', async ({ from, to }) => {
    const run = () => tf.cast(tf.tensor1d([-2.75, -1, -0.5, 0, 0.5, 1.5, 3.25, 7], from), to);
    await tf.setBackend('wasm');
    const wasm = evaluate(() => [run()]);
    await tf.setBackend('cpu');
    const cpu = evaluate(() => [run()]);
    await tf.setBackend('wasm');
    expect(wasm).toEqual(cpu);
  });
});

describe('a batch-norm training step', () => {
  /**
   * Loss and gradients of a batch-normalised activation as tfjs-layers trains it (tf.moments + tf.batchNorm), with
   * parameters of shape paramShape.
   */
  const stepOf = (xShape: number[], paramShape: number[]) => () => {
    const x = tensor(xShape, 91, -2, 3);
    const gamma = tf.reshape(tensor([paramShape.at(-1)!], 92, 0.5, 1.5), paramShape);
    const beta = tf.reshape(tensor([paramShape.at(-1)!], 93), paramShape);
    const r = tensor(xShape, 94);
    const axes = xShape.slice(0, -1).map((_, i) => i);
    const loss = (xt: tf.Tensor, g: tf.Tensor, b: tf.Tensor): tf.Scalar => {
      const { mean, variance } = tf.moments(xt, axes, paramShape.length > 1);
      return tf.sum(tf.mul(tf.relu(tf.batchNorm(xt, mean, variance, b, g, 1e-3)), r));
    };
    const { value, grads } = tf.valueAndGrads(loss)([x, gamma, beta]);
    return [value, ...grads];
  };
  const step = stepOf([4, 6, 6, 12], [12]);

  // The native gradient (MnistDdpBatchNormGrad) takes the first three; 3 rows is below its minimum of 4, so tfjs-core's
  // own gradient runs there. tfjs-core's gradient cannot take [1,1,1,C] parameters (it reduces only rank-1 ones), so
  // that case is checked against cpu's [C] run.
  it.each([
    { name: '[4,6,6,12], [C] parameters', xShape: [4, 6, 6, 12], paramShape: [12], cpuParamShape: [12], native: 1 },
    { name: '[4,6,6,12], [1,1,1,C] parameters', xShape: [4, 6, 6, 12], paramShape: [1, 1, 1, 12], cpuParamShape: [12], native: 1 },
    { name: '[5,7,9], 9 channels', xShape: [5, 7, 9], paramShape: [9], cpuParamShape: [9], native: 1 },
    { name: '[3,10], 3 rows: stock gradient', xShape: [3, 10], paramShape: [10], cpuParamShape: [10], native: 0 },
  ])('gives the loss and gradients of cpu ($name)', async ({ xShape, paramShape, cpuParamShape, native }) => {
    await tf.setBackend('wasm');
    const spy = vi.spyOn(nativeKernels(tf.backend() as never), 'batchNormGrad');
    const wasm = evaluate(stepOf(xShape, paramShape));
    const nativeCalls = spy.mock.calls.length;
    spy.mockRestore();
    await tf.setBackend('cpu');
    const cpu = evaluate(stepOf(xShape, cpuParamShape));
    await tf.setBackend('wasm');
    expect(nativeCalls).toBe(native);
    wasm.forEach((w, i) => {
      expect(size(w.shape), `output ${i}`).toBe(size(cpu[i]!.shape));
      expect(scaledError(w.values, cpu[i]!.values), `output ${i}`).toBeLessThan(1e-5);
    });
    expect(wasm.slice(1).map((w) => w.shape)).toEqual([xShape, paramShape, paramShape]);
  });

  // tfjs-core cannot differentiate tf.batchNorm without a scale (it saves the absent input), so the kernel is checked
  // directly against the float64 derivatives, with and without scale.
  it.each([{ withScale: true }, { withScale: false }])('MnistDdpBatchNormGrad equals the float64 derivatives (scale: $withScale)', async ({ withScale }) => {
    await tf.setBackend('wasm');
    const [rows, c, eps] = [37, 7, 1e-3];
    const x = randomFloats(rows * c, 101, -2, 3), dy = randomFloats(rows * c, 102);
    const mean = randomFloats(c, 103), variance = randomFloats(c, 104, 0.1, 2), scale = randomFloats(c, 105, 0.5, 1.5);
    const got = tf.tidy(() => (tf.engine().runKernel('MnistDdpBatchNormGrad', {
      dy: tf.tensor2d(dy, [rows, c]), x: tf.tensor2d(x, [rows, c]), mean: tf.tensor1d(mean), variance: tf.tensor1d(variance),
      ...(withScale ? { scale: tf.tensor1d(scale) } : {}),
    }, { varianceEpsilon: eps }) as tf.Tensor[]).map((t) => Array.from(t.dataSync())));
    const want = [new Array<number>(rows * c), ...[0, 1, 2, 3].map(() => new Array<number>(c).fill(0))] as number[][];
    for (let j = 0; j < c; j++) {
      const r = 1 / Math.sqrt(variance[j]! + eps), s = withScale ? scale[j]! : 1;
      let s1 = 0, s2 = 0;
      for (let i = 0; i < rows; i++) {
        const g = dy[i * c + j]!;
        s1 += g;
        s2 += g * (x[i * c + j]! - mean[j]!);
        want[0]![i * c + j] = g * s * r;
      }
      [want[1]![j], want[2]![j], want[3]![j], want[4]![j]] = [-s * r * s1, -0.5 * s * r ** 3 * s2, r * s2, s1];
    }
    got.forEach((g, i) => expect(scaledError(g, want[i]!), `output ${i}`).toBeLessThan(1e-6));
  });

  it('leaks no tensors, bytes or buffers over repeated steps', async () => {
    await tf.setBackend('wasm');
    tf.tidy(() => void step());
    const before = tf.memory();
    for (let i = 0; i < 5; i++) tf.tidy(() => void step().map((t) => t.dataSync()));
    const after = tf.memory();
    expect(after.numTensors).toBe(before.numTensors);
    expect(after.numBytes).toBe(before.numBytes);
    expect(after.numDataBuffers).toBe(before.numDataBuffers);
  });
});

describe('Mean gradient (mean-grad.ts, registered for every backend)', () => {
  it.each([
    { shape: [4, 6, 6, 12], axis: [0, 1, 2], keepDims: false },
    { shape: [4, 6, 6, 12], axis: [0, 1, 2], keepDims: true },
    { shape: [5, 7, 9], axis: [-1], keepDims: false },
    { shape: [5, 7, 9], axis: [2, 0], keepDims: true },
    { shape: [6, 10], axis: null, keepDims: false },
  ])('is dy / N broadcast over the reduced axes: $shape, axis $axis, keepDims $keepDims', async ({ shape, axis, keepDims }) => {
    for (const backend of ['wasm', 'cpu'] as const) {
      await tf.setBackend(backend);
      const x = tensor(shape, 111);
      const outShape = tf.tidy(() => tf.mean(x, axis ?? undefined, keepDims).shape);
      const dy = tensor(outShape, 112);
      const got = tf.tidy(() => tf.grad((t: tf.Tensor) => tf.mean(t, axis ?? undefined, keepDims))(x, dy).dataSync());
      // Expected, from the definition: every element of x contributes 1/N of its group's dy.
      const axes = axis === null ? shape.map((_, i) => i) : axis.map((a) => (a + shape.length) % shape.length);
      const n = axes.reduce((p, a) => p * shape[a]!, 1);
      const dyValues = dy.dataSync();
      const strides = shape.map((_, i) => shape.slice(i + 1).reduce((p, d) => p * d, 1));
      const keptStrides = shape.map((_, i) => shape.slice(i + 1).reduce((p, d, j) => p * (axes.includes(i + 1 + j) ? 1 : d), 1));
      for (let flat = 0; flat < got.length; flat++) {
        const at = shape.reduce((p, _, i) => p + (axes.includes(i) ? 0 : Math.floor(flat / strides[i]!) % shape[i]! * keptStrides[i]!), 0);
        expect(got[flat], `${backend} element ${flat}`).toBe(Math.fround(dyValues[at]! / n));
      }
      x.dispose();
      dy.dispose();
    }
    await tf.setBackend('wasm');
  });

  it('gives an empty gradient for an empty x, as tfjs-core does', async () => {
    for (const backend of ['wasm', 'cpu'] as const) {
      await tf.setBackend(backend);
      const g = tf.tidy(() => tf.grad((t: tf.Tensor) => tf.mean(t, 1))(tf.zeros([3, 0])));
      expect(g.shape).toEqual([3, 0]);
      g.dispose();
    }
    await tf.setBackend('wasm');
  });
});
