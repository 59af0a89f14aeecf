import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/shared/core/backend.js';
import { randomFloats } from '../helpers/random.js';

// Issue #17: tfjs-core's conformance spec 'conv2dTranspose … input=8x8x8,output=4x4x8,f=8,s=1,inDepth=8,p=same vec4'
// passes a dy larger than the window geometry implies; tfjs's kernels read its top-left [OH, OW] window. Our
// kernels refused it (issue #15's exact-shape check). Each kernel that reads dy must now match the cpu backend.

interface Case { name: string; kernel: string; inputs: Record<string, number[]>; attrs: object }

const conv = { strides: [1, 1], pad: 'same', dataFormat: 'NHWC', dimRoundingMode: undefined };
// x [2,4,4,3] * filter [3,3,3,5], same, strides 1 → dy [2,4,4,5]; given a [2,6,7,5] dy.
const CASES: Case[] = [
  { name: 'Conv2DBackpropInput', kernel: 'Conv2DBackpropInput', inputs: { dy: [2, 6, 7, 5], filter: [3, 3, 3, 5] }, attrs: { ...conv, inputShape: [2, 4, 4, 3] } },
  { name: 'Conv2DBackpropFilter (im2col path)', kernel: 'Conv2DBackpropFilter', inputs: { x: [2, 4, 4, 3], dy: [2, 6, 7, 5] }, attrs: { ...conv, filterShape: [3, 3, 3, 5] } },
  // 9 taps, 16 output channels: the direct filter-gradient kernel.
  { name: 'Conv2DBackpropFilter (direct path)', kernel: 'Conv2DBackpropFilter', inputs: { x: [2, 5, 5, 1], dy: [2, 5, 8, 16] }, attrs: { ...conv, filterShape: [3, 3, 1, 16] } },
  // input [2,6,6,3], window 2, strides 2 → dy [2,3,3,3]; given [2,4,3,3].
  { name: 'MaxPoolGrad', kernel: 'MaxPoolGrad', inputs: { dy: [2, 4, 3, 3], input: [2, 6, 6, 3], output: [2, 3, 3, 3] }, attrs: { filterSize: 2, strides: 2, pad: 'valid' } },
];

async function runOn(backend: 'cpu' | 'wasm', c: Case): Promise<Float32Array> {
  await tf.setBackend(backend);
  return tf.tidy(() => {
    const tensors = Object.fromEntries(Object.entries(c.inputs).map(([k, shape], i) =>
      [k, tf.tensor(randomFloats(shape.reduce((a, b) => a * b, 1), 11 + i), shape)]));
    return (tf.engine().runKernel(c.kernel, tensors, c.attrs as tf.NamedAttrMap) as tf.Tensor).dataSync() as Float32Array;
  });
}

describe('kernels read the top-left window of a dy larger than the geometry implies, as tfjs does', () => {
  beforeAll(async () => {
    await initBackend('wasm');
    await tf.ready();
  });

  it.each(CASES.map((c) => [c.name, c] as const))('%s matches the cpu backend within 1e-4', async (_name, c) => {
    const before = tf.memory().numTensors;
    const got = await runOn('wasm', c);
    const want = await runOn('cpu', c);
    await tf.setBackend('wasm');
    expect(got.length).toBe(want.length);
    const scale = Math.max(...want.map(Math.abs));
    for (let i = 0; i < want.length; i++) expect(Math.abs(got[i]! - want[i]!)).toBeLessThanOrEqual(1e-4 * scale);
    expect(tf.memory().numTensors).toBe(before);
  });
});
