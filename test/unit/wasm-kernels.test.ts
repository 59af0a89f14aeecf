import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it, vi } from 'vitest';
import { initBackend } from '../../src/shared/core/backend.js';
import { nativeKernels } from '../../src/shared/kernels/native.js';
import { convForward, convGradFilter, convGradInput, outDims, relError, type RefConv } from '../helpers/conv-reference.js';
import { randomFloats } from '../helpers/random.js';

// Issue #2: training kernels for the wasm backend must match the cpu backend within 1e-4 relative error and pass a
// finite-difference check, for every conv2d attribute tfjs-layers uses.

async function on<T>(backend: 'cpu' | 'wasm', fn: () => T | Promise<T>): Promise<T> {
  await tf.setBackend(backend);
  return fn();
}

function runKernel(name: string, inputs: Record<string, Float32Array>, shapes: Record<string, number[]>, attrs: object): Float32Array {
  return tf.tidy(() => {
    const tensors = Object.fromEntries(Object.entries(inputs).map(([k, v]) => [k, tf.tensor(v, shapes[k])]));
    return (tf.engine().runKernel(name, tensors, attrs as tf.NamedAttrMap) as tf.Tensor).dataSync() as Float32Array;
  });
}

const GRID: RefConv[] = [];
// Filter-gradient paths: direct (≤ 32 taps and Cout a multiple of 16: the 14x14x1→32 layer), col(x)ᵀ · dy (taps ≥
// Cout; col(x)ᵀ gathered directly for Cin a multiple of 4: Cin 4 and 32, else im2col + transpose: Cin 1 and 5), and
// dyᵀ · col(x) (taps < Cout: the 8x7x3→4 and 6x6x36→40 1x1 layers). Forward: direct for ≤ 32 taps and Cout a
// multiple of 16 (14x14x1→32; conv2d.ts). All three: Winograd (3x3, stride 1, undilated, channels in fours;
// winograd.ts): `cnn`'s conv2 13x13x32→64, `cnn-large`'s 14x14x64→64, and 7x9x8→12 / 6x5x12→8 /
// 7x6x4→4, whose output sizes leave partial tiles on one or both edges.
for (const [h, w, cin, cout, kh, kw] of [
  [12, 12, 1, 8, 3, 3], [14, 14, 1, 32, 3, 3], [9, 11, 5, 6, 3, 3], [10, 10, 4, 3, 5, 5], [8, 7, 3, 4, 1, 1], [6, 6, 36, 40, 1, 1],
  [13, 13, 32, 64, 3, 3], [14, 14, 64, 64, 3, 3], [7, 9, 8, 12, 3, 3], [6, 5, 12, 8, 3, 3], [7, 6, 4, 4, 3, 3],
] as const) {
  for (const [sh, sw] of [[1, 1], [2, 2], [2, 1]] as const) {
    for (const pad of ['valid', 'same'] as const) {
      for (const [dh, dw] of [[1, 1], [2, 2]] as const) {
        if ((sh > 1 || sw > 1) && (dh > 1 || dw > 1)) continue; // tfjs forbids strides > 1 together with dilations > 1
        // B=4 on 13x13x32→64: 36 tiles, more than one Winograd block of 32 (dW accumulates across blocks).
        const c: RefConv = { b: cin === 32 ? 4 : cin > 32 ? 2 : 3, h, w, cin, cout, kh, kw, sh, sw, dh, dw, pad };
        const { oh, ow } = outDims(c);
        if (oh > 0 && ow > 0) GRID.push(c);
      }
    }
  }
}

const label = (c: RefConv) => `x ${c.b}x${c.h}x${c.w}x${c.cin}, filter ${c.kh}x${c.kw}x${c.cin}x${c.cout}, strides ${c.sh},${c.sw}, ${c.pad}, dilations ${c.dh},${c.dw}`;

describe('wasm training kernels', () => {
  beforeAll(async () => {
    await initBackend('wasm');
  });

  describe.each(GRID.map((c) => [label(c), c] as const))('%s', (_name, c) => {
    const { oh, ow } = outDims(c);
    const x = randomFloats(c.b * c.h * c.w * c.cin, 1);
    const w = randomFloats(c.kh * c.kw * c.cin * c.cout, 2);
    const dy = randomFloats(c.b * oh * ow * c.cout, 3);
    const xShape = [c.b, c.h, c.w, c.cin];
    const wShape = [c.kh, c.kw, c.cin, c.cout];
    const dyShape = [c.b, oh, ow, c.cout];
    const common = { strides: [c.sh, c.sw], pad: c.pad, dataFormat: 'NHWC', dilations: [c.dh, c.dw] };
    const dilated = c.dh > 1 || c.dw > 1;

    // The route conv2d.ts must take: Winograd, the direct kernel, or the stock (XNNPACK) one.
    const winograd = c.kh === 3 && c.kw === 3 && c.sh === 1 && c.sw === 1 && !dilated && c.cin % 4 === 0 && c.cout % 4 === 0;
    const direct = !winograd && c.kh * c.kw * c.cin <= 32 && c.cout % 16 === 0;

    it(`Conv2D matches the reference within 1e-4`, async () => {
      const k = nativeKernels(tf.engine().findBackend('wasm') as never);
      const spies = [vi.spyOn(k, 'winogradConv'), vi.spyOn(k, 'convDirect')];
      const got = await on('wasm', () => runKernel('Conv2D', { x, filter: w }, { x: xShape, filter: wShape }, common));
      expect(spies.map((spy) => spy.mock.calls.length)).toEqual([winograd ? 1 : 0, direct ? 1 : 0]);
      spies.forEach((spy) => spy.mockRestore());
      expect(relError(got, convForward(c, x, w))).toBeLessThan(1e-4);
      const cpu = await on('cpu', () => runKernel('Conv2D', { x, filter: w }, { x: xShape, filter: wShape }, common));
      expect(relError(got, cpu)).toBeLessThan(1e-4);
    });

    it('Conv2DBackpropFilter matches the reference within 1e-4', async () => {
      const got = await on('wasm', () => runKernel('Conv2DBackpropFilter', { x, dy }, { x: xShape, dy: dyShape }, { ...common, filterShape: wShape }));
      expect(relError(got, convGradFilter(c, x, dy))).toBeLessThan(1e-4);
      if (!dilated) {
        const cpu = await on('cpu', () => runKernel('Conv2DBackpropFilter', { x, dy }, { x: xShape, dy: dyShape }, { ...common, filterShape: wShape }));
        expect(relError(got, cpu)).toBeLessThan(1e-4);
      }
    });

    it('Conv2DBackpropInput matches the reference within 1e-4', async () => {
      const got = await on('wasm', () => runKernel('Conv2DBackpropInput', { dy, filter: w }, { dy: dyShape, filter: wShape }, { ...common, inputShape: xShape }));
      expect(relError(got, convGradInput(c, w, dy))).toBeLessThan(1e-4);
      if (!dilated) {
        const cpu = await on('cpu', () => runKernel('Conv2DBackpropInput', { dy, filter: w }, { dy: dyShape, filter: wShape }, { ...common, inputShape: xShape }));
        expect(relError(got, cpu)).toBeLessThan(1e-4);
      }
    });

    it('tf.grads through conv2d on wasm equals the reference gradients', async () => {
      const [gx, gw] = await on('wasm', () => tf.tidy(() => {
        const f = (xt: tf.Tensor, wt: tf.Tensor) => tf.sum(tf.mul(tf.conv2d(xt as tf.Tensor4D, wt as tf.Tensor4D, [c.sh, c.sw], c.pad, 'NHWC', [c.dh, c.dw]), tf.tensor(dy, dyShape)));
        return tf.grads(f)([tf.tensor(x, xShape), tf.tensor(w, wShape)]).map((g) => g.dataSync());
      }));
      expect(relError(gx!, convGradInput(c, w, dy))).toBeLessThan(1e-4);
      expect(relError(gw!, convGradFilter(c, x, dy))).toBeLessThan(1e-4);
    });
  });

  it.each([
    { name: 'strided, same, 3x3 on 7x7x3', c: { b: 2, h: 7, w: 7, cin: 3, cout: 4, kh: 3, kw: 3, sh: 2, sw: 2, dh: 1, dw: 1, pad: 'same' } as RefConv },
    { name: 'dilated, valid, 3x3 on 9x8x2', c: { b: 2, h: 9, w: 8, cin: 2, cout: 3, kh: 3, kw: 3, sh: 1, sw: 1, dh: 2, dw: 2, pad: 'valid' } as RefConv },
  ])('passes a finite-difference check ($name)', async ({ c }) => {
    const { oh, ow } = outDims(c);
    const x = randomFloats(c.b * c.h * c.w * c.cin, 11);
    const w = randomFloats(c.kh * c.kw * c.cin * c.cout, 12);
    const r = randomFloats(c.b * oh * ow * c.cout, 13);
    const loss = (xv: ArrayLike<number>, wv: ArrayLike<number>) => convForward(c, xv, wv).reduce((s, v, i) => s + v * r[i]!, 0);
    const common = { strides: [c.sh, c.sw], pad: c.pad, dataFormat: 'NHWC', dilations: [c.dh, c.dw] };
    const gw = await on('wasm', () => runKernel('Conv2DBackpropFilter', { x, dy: r }, { x: [c.b, c.h, c.w, c.cin], dy: [c.b, oh, ow, c.cout] }, { ...common, filterShape: [c.kh, c.kw, c.cin, c.cout] }));
    const gx = await on('wasm', () => runKernel('Conv2DBackpropInput', { dy: r, filter: w }, { dy: [c.b, oh, ow, c.cout], filter: [c.kh, c.kw, c.cin, c.cout] }, { ...common, inputShape: [c.b, c.h, c.w, c.cin] }));
    const eps = 1e-3;
    const fd = (v: Float32Array, i: number, f: (p: Float64Array) => number) => {
      const p = Float64Array.from(v); p[i] = v[i]! + eps; const up = f(p); p[i] = v[i]! - eps; return (up - f(p)) / (2 * eps);
    };
    for (let i = 0; i < w.length; i += Math.max(1, Math.floor(w.length / 17))) {
      expect(Math.abs(fd(w, i, (p) => loss(x, p)) - gw[i]!)).toBeLessThan(1e-3 * Math.max(1, Math.abs(gw[i]!)));
    }
    for (let i = 0; i < x.length; i += Math.max(1, Math.floor(x.length / 23))) {
      expect(Math.abs(fd(x, i, (p) => loss(p, w)) - gx[i]!)).toBeLessThan(1e-3 * Math.max(1, Math.abs(gx[i]!)));
    }
  });

  it('Winograd: outputs that are non-finite on cpu are non-finite here, and a tile without NaN or Inf is finite', async () => {
    const [b, h, w, cin, cout] = [1, 10, 10, 4, 4];
    const x = randomFloats(b * h * w * cin, 41);
    x[(3 * w + 3) * cin] = Number.NaN;
    x[(8 * w + 8) * cin + 1] = Number.POSITIVE_INFINITY;
    const f = randomFloats(9 * cin * cout, 42);
    const run = () => tf.tidy(() => tf.conv2d(tf.tensor4d(x, [b, h, w, cin]), tf.tensor4d(f, [3, 3, cin, cout]), 1, 'valid').dataSync());
    const spy = vi.spyOn(nativeKernels(tf.engine().findBackend('wasm') as never), 'winogradConv');
    const got = await on('wasm', run);
    expect(spy).toHaveBeenCalledTimes(1);
    spy.mockRestore();
    const cpu = await on('cpu', run);
    cpu.forEach((v, i) => { if (!Number.isFinite(v)) expect(Number.isFinite(got[i]!), `output ${i}`).toBe(false); });
    // 8x8 outputs in 2x2 tiles of 4x4: the NaN (input 3,3) reaches tile (0,0) only, the Inf (input 8,8) tile (1,1) only.
    const tileOf = (i: number): number => { const p = Math.floor(i / cout); return Math.floor(Math.floor(p / 8) / 4) * 2 + Math.floor((p % 8) / 4); };
    got.forEach((v, i) => { if (tileOf(i) === 1 || tileOf(i) === 2) expect(v, `output ${i}`).toBeCloseTo(cpu[i]!, 4); });
  });

  it.each([
    { name: 'Winograd, bias + relu, valid 13x13x32→64', shape: [2, 13, 13, 32], cout: 64, pad: 'valid', activation: 'relu', bias: [64] },
    { name: 'Winograd, [1,1,1,C] bias, linear, same 7x9x8→12', shape: [2, 7, 9, 8], cout: 12, pad: 'same', activation: 'linear', bias: [1, 1, 1, 12] },
    { name: 'Winograd, no bias, relu, same 6x5x12→8', shape: [3, 6, 5, 12], cout: 8, pad: 'same', activation: 'relu', bias: undefined },
    { name: 'direct (9 taps), bias + relu, valid 28x28x1→32', shape: [2, 28, 28, 1], cout: 32, pad: 'valid', activation: 'relu', bias: [32] },
    { name: 'direct (9 taps), no bias, linear, same 9x7x1→16', shape: [2, 9, 7, 1], cout: 16, pad: 'same', activation: 'linear', bias: undefined },
    { name: 'stock (leakyrelu), same 7x9x8→12', shape: [2, 7, 9, 8], cout: 12, pad: 'same', activation: 'leakyrelu', bias: [12] },
  ] as const)('FusedConv2D matches cpu ($name)', async ({ name, shape, cout, pad, activation, bias }) => {
    const [b, h, w, cin] = shape;
    const x = randomFloats(b * h * w * cin, 31);
    const f = randomFloats(9 * cin * cout, 32);
    const bv = randomFloats(cout, 33);
    const run = () => tf.tidy(() => tf.fused.conv2d({
      x: tf.tensor4d(x, [b, h, w, cin]), filter: tf.tensor4d(f, [3, 3, cin, cout]), strides: 1, pad,
      bias: bias ? tf.tensor(bv, [...bias]) : undefined, activation, leakyreluAlpha: 0.1,
    }).dataSync());
    const k = nativeKernels(tf.engine().findBackend('wasm') as never);
    const spies = [vi.spyOn(k, 'winogradConv'), vi.spyOn(k, 'convDirect')];
    const got = await on('wasm', run);
    expect(spies.map((spy) => spy.mock.calls.length)).toEqual([name.startsWith('Winograd') ? 1 : 0, name.startsWith('direct') ? 1 : 0]);
    spies.forEach((spy) => spy.mockRestore());
    const cpu = await on('cpu', run);
    expect(relError(got, cpu)).toBeLessThan(1e-4);
    if (activation === 'relu') expect(got.some((v) => v === 0) && got.some((v) => v > 0)).toBe(true);
  });

  it.each([
    { name: '2x2 windows, stride 2 (max_pool_grad_2x2)', filterSize: [2, 2], strides: [2, 2], pad: 'valid', shape: [1, 4, 4, 4] },
    { name: '3x3 windows, stride 1, same (max_pool_grad)', filterSize: [3, 3], strides: [1, 1], pad: 'same', shape: [1, 4, 4, 3] },
  ])('MaxPoolGrad routes NaN and -inf windows as cpu does ($name)', async ({ filterSize, strides, pad, shape }) => {
    // Window values chosen so that each rule shows: a leading NaN (cpu takes the maximum of the rest), a window of
    // -inf and NaN only (cpu sends dy nowhere), ties (the first wins), +inf.
    const n = shape.reduce((a, b) => a * b);
    const specials = [Number.NaN, Number.NEGATIVE_INFINITY, Number.POSITIVE_INFINITY, 0, 0, 1];
    const x = Float32Array.from({ length: n }, (_, i) => (i % 7 === 0 ? Number.NEGATIVE_INFINITY : specials[(i * 5) % specials.length]!));
    const run = () => tf.tidy(() => {
      const xt = tf.tensor4d(x, shape as [number, number, number, number]);
      const y = tf.maxPool(xt, filterSize as [number, number], strides as [number, number], pad as 'same');
      const dy = tf.range(1, 1 + y.size).reshape(y.shape);
      return (tf.engine().runKernel('MaxPoolGrad', { dy, input: xt, output: y }, { filterSize, strides, pad }) as tf.Tensor).dataSync();
    });
    const got = await on('wasm', run);
    const cpu = await on('cpu', run);
    expect(Array.from(got)).toEqual(Array.from(cpu));
  });

  it.each([
    { filterSize: [2, 2], strides: [2, 2], pad: 'valid', shape: [3, 26, 26, 32] },
    { filterSize: [3, 3], strides: [2, 2], pad: 'same', shape: [2, 9, 9, 5] },
    { filterSize: [3, 3], strides: [1, 1], pad: 'same', shape: [2, 6, 7, 3] },
    { filterSize: [2, 2], strides: [2, 2], pad: 'valid', shape: [2, 11, 11, 64] },
  ])('MaxPoolGrad matches cpu (window $filterSize, strides $strides, $pad, input $shape)', async ({ filterSize, strides, pad, shape }) => {
    // ReLU-like inputs: many exact ties at zero, where the first-maximum rule matters.
    const x = randomFloats(shape.reduce((a, b) => a * b), 21).map((v) => Math.max(0, v));
    const run = () => tf.tidy(() => {
      const xt = tf.tensor4d(x, shape as [number, number, number, number]);
      return tf.grad((t: tf.Tensor) => tf.sum(tf.mul(tf.maxPool(t as tf.Tensor4D, filterSize as [number, number], strides as [number, number], pad as 'same'), tf.range(1, 1 + tf.maxPool(xt, filterSize as [number, number], strides as [number, number], pad as 'same').size).reshape(tf.maxPool(xt, filterSize as [number, number], strides as [number, number], pad as 'same').shape))))(xt).dataSync();
    });
    const got = await on('wasm', run);
    const cpu = await on('cpu', run);
    expect(relError(got, cpu)).toBeLessThan(1e-6);
  });

  it('bias adds, bias gradients (Sum over all but the last axis), ReLU gradients, transposed dense GEMMs and Tile match cpu', async () => {
    const x = randomFloats(4 * 26 * 26 * 32, 31);
    const a = randomFloats(64 * 1600, 32);
    const b = randomFloats(64 * 10, 33);
    const run = () => tf.tidy(() => {
      const xt = tf.tensor4d(x, [4, 26, 26, 32]);
      const sum = tf.sum(xt, [0, 1, 2]).dataSync();
      const sumKeep = tf.sum(xt, [0, 1, 2], true).dataSync();
      const relu = tf.grad((t: tf.Tensor) => tf.sum(tf.mul(tf.relu(t), xt)))(xt.mul(-1).add(0.1)).dataSync();
      const at = tf.tensor2d(a, [64, 1600]);
      const bt = tf.tensor2d(b, [64, 10]);
      const ta = tf.matMul(at, bt, true, false).dataSync();
      const tb = tf.matMul(bt, at.slice([0, 0], [10, 1600]), false, false).dataSync();
      const tbT = tf.matMul(bt, tf.tensor2d(a.subarray(0, 1600 * 10), [1600, 10]), false, true).dataSync();
      // Tile: the block-repeat fast path (batch-norm gradients), and shapes that must take the stock kernel.
      const channel = tf.tensor4d(x.subarray(0, 32), [1, 1, 1, 32]);
      const tiled = tf.tile(channel, [4, 26, 26, 1]).dataSync();
      const tiledOdd = tf.tile(tf.tensor2d(x.subarray(0, 6), [1, 6]), [7, 1]).dataSync();
      const tiledInner = tf.tile(tf.tensor2d(x.subarray(0, 6), [2, 3]), [2, 3]).dataSync();
      // Bias add: [1,1,1,C] as tfjs-layers adds it, a rank-1 bias first, an odd channel count, and a non-bias
      // broadcast that must take the stock kernel.
      const biased = tf.add(xt, tf.tensor4d(b.subarray(0, 32), [1, 1, 1, 32])).dataSync();
      const biasFirst = tf.add(tf.tensor1d(b.subarray(0, 32)), xt).dataSync();
      const biasOdd = tf.add(tf.tensor2d(x.subarray(0, 35), [5, 7]), tf.tensor1d(b.subarray(0, 7))).dataSync();
      const notBias = tf.add(xt, tf.tensor4d(b.subarray(0, 26), [1, 1, 26, 1])).dataSync();
      return [sum, sumKeep, relu, ta, tb, tbT, tiled, tiledOdd, tiledInner, biased, biasFirst, biasOdd, notBias];
    });
    const got = await on('wasm', run);
    const cpu = await on('cpu', run);
    got.forEach((g, i) => expect(relError(g, cpu[i]!), `output ${i}`).toBeLessThan(1e-4));
  });

  it.each([
    { name: "cnn-large's fc1", m: 64, k: 3136, n: 128 },
    { name: 'a head with an odd width', m: 6, k: 33, n: 10 },
    { name: 'a product larger than its operands', m: 50, k: 3, n: 41 },
  ])('dense GEMMs match cpu in every transpose, and fused with a bias and ReLU: $name', async ({ m, k, n }) => {
    const a = randomFloats(m * k, 51);
    const b = randomFloats(k * n, 52);
    const bias = randomFloats(n, 53);
    const run = () => tf.tidy(() => {
      const at = tf.tensor2d(a, [m, k]);
      const bt = tf.tensor2d(b, [k, n]);
      const [aT, bT] = [at.transpose(), bt.transpose()];
      return [
        tf.matMul(aT, bt, true, false), tf.matMul(at, bT, false, true), tf.matMul(aT, bT, true, true),
        tf.matMul(aT.expandDims(0), bT.expandDims(0), true, true),
        tf.fused.matMul({ a: at, b: bt }), tf.fused.matMul({ a: at, b: bt, bias: tf.tensor1d(bias), activation: 'relu' }),
        tf.fused.matMul({ a: at, b: bt, bias: tf.tensor1d(bias) }), tf.fused.matMul({ a: at.expandDims(0), b: bt.expandDims(0), activation: 'relu' }),
      ].map((t) => ({ shape: t.shape, values: t.dataSync() }));
    });
    const got = await on('wasm', run);
    const cpu = await on('cpu', run);
    got.forEach((g, i) => {
      expect(g.shape, `output ${i}`).toEqual(cpu[i]!.shape);
      expect(relError(g.values as Float32Array, cpu[i]!.values as Float32Array), `output ${i}`).toBeLessThan(1e-5);
    });
    expect(got[5]!.values.some((v) => v === 0) && got[5]!.values.some((v) => v > 0)).toBe(true);
  });

  it('Identity shares memory: a clone outlives its source, and the memory is freed with the last owner', async () => {
    await tf.setBackend('wasm');
    const values = randomFloats(64 * 26 * 26, 41);
    const before = tf.memory();
    const source = tf.tensor2d(values, [64, 26 * 26]);
    const clone = tf.clone(source);
    expect(tf.memory().numDataBuffers - before.numDataBuffers).toBe(1); // one buffer, two tensors
    source.dispose();
    expect(clone.dataSync()).toEqual(values);
    const sum = tf.tidy(() => clone.add(1).sum().dataSync()[0]!);
    expect(sum).toBeCloseTo(values.reduce((n, v) => n + v + 1, 0), 0);
    clone.dispose();
    expect(tf.memory().numDataBuffers).toBe(before.numDataBuffers);
    // Gradients save their inputs through Identity: the saved copies must survive the forward tensors' disposal.
    const x = tf.tensor2d(values.subarray(0, 640), [64, 10]);
    const g = tf.tidy(() => tf.grad((t: tf.Tensor) => tf.sum(tf.mul(tf.relu(t), t)))(x));
    expect(relError(g.dataSync() as Float32Array, Float32Array.from(values.subarray(0, 640), (v) => (v > 0 ? 2 * v : 0)))).toBeLessThan(1e-6);
    tf.dispose([x, g]);
    expect(tf.memory().numDataBuffers).toBe(before.numDataBuffers);
    expect(tf.memory().numBytes).toBe(before.numBytes);
  });
});
