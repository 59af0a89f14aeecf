import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { filterGradByTapsKernel } from '../../src/shared/kernels/filter-grad-by-taps.js';
import { randomFloats } from '../helpers/random.js';

type Shape4 = [number, number, number, number];

interface FilterGradGeometry {
  strides: number | [number, number];
  pad: 'valid' | 'same' | number | tf.backend_util.ExplicitPadding;
  dilations: number | [number, number];
  dimRoundingMode?: 'floor' | 'round' | 'ceil';
}

/** The kernel as webgpu gets it, built here from the cpu backend's kernels; its output read and released. */
function byTaps(x: tf.Tensor4D, dy: tf.Tensor4D, filterShape: Shape4, g: FilterGradGeometry): Float32Array {
  const backend = tf.backend();
  const out = filterGradByTapsKernel('cpu').kernelFunc({ inputs: { x, dy }, backend, attrs: { ...g, filterShape, dataFormat: 'NHWC' } as unknown as tf.NamedAttrMap }) as tf.TensorInfo;
  expect(out.shape).toEqual(filterShape);
  const values = backend.readSync(out.dataId) as Float32Array;
  backend.disposeData(out.dataId);
  return values;
}

/** dW by definition, in float64: Σ over b, oh, ow of x[b, oh·s + kh·d − padTop, ow·s + kw·d − padLeft, ci] · dy[b, oh, ow, co]. */
function reference(x: Float32Array, xShape: Shape4, dy: Float32Array, filterShape: Shape4, g: FilterGradGeometry): Float64Array {
  const info = tf.backend_util.computeConv2DInfo(xShape, filterShape, g.strides, g.dilations, g.pad, g.dimRoundingMode);
  const [B, H, W, C] = xShape;
  const [KH, KW, , CO] = filterShape;
  const out = new Float64Array(KH * KW * C * CO);
  for (let b = 0; b < B; b++) for (let oh = 0; oh < info.outHeight; oh++) for (let ow = 0; ow < info.outWidth; ow++) {
    for (let kh = 0; kh < KH; kh++) for (let kw = 0; kw < KW; kw++) {
      const ih = oh * info.strideHeight + kh * info.dilationHeight - info.padInfo.top;
      const iw = ow * info.strideWidth + kw * info.dilationWidth - info.padInfo.left;
      if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
      for (let ci = 0; ci < C; ci++) for (let co = 0; co < CO; co++) {
        out[((kh * KW + kw) * C + ci) * CO + co]! += x[((b * H + ih) * W + iw) * C + ci]! * dy[((b * info.outHeight + oh) * info.outWidth + ow) * CO + co]!;
      }
    }
  }
  return out;
}

const CASES: { name: string; x: Shape4; filter: Shape4; geometry: FilterGradGeometry }[] = [
  { name: '`cnn` conv1: 3×3 valid, 1 → 8 channels', x: [3, 12, 12, 1], filter: [3, 3, 1, 8], geometry: { strides: 1, pad: 'valid', dilations: 1 } },
  { name: '`cnn-large`: 3×3 same, 4 → 6 channels', x: [2, 9, 9, 4], filter: [3, 3, 4, 6], geometry: { strides: 1, pad: 'same', dilations: 1 } },
  { name: '5×5 same, stride 2 (asymmetric padding)', x: [2, 10, 9, 3], filter: [5, 5, 3, 4], geometry: { strides: 2, pad: 'same', dilations: 1 } },
  { name: '3×2 valid, strides 2×3', x: [2, 11, 13, 2], filter: [3, 2, 2, 5], geometry: { strides: [2, 3], pad: 'valid', dilations: 1 } },
  { name: '3×3 dilated 2, explicit padding', x: [1, 9, 10, 2], filter: [3, 3, 2, 3], geometry: { strides: 1, pad: [[0, 0], [2, 1], [1, 2], [0, 0]], dilations: 2 } },
  { name: 'numeric padding 1, stride 3, round', x: [2, 8, 8, 3], filter: [3, 3, 3, 2], geometry: { strides: 3, pad: 1, dilations: 1, dimRoundingMode: 'round' } },
];

describe('Conv2DBackpropFilter by taps (the webgpu kernel, built from cpu kernels) against dW by definition', () => {
  beforeAll(async () => {
    await tf.setBackend('cpu');
  });

  for (const c of CASES) {
    it(`${c.name}: within 1e-5 of the float64 sum, relative to its largest entry`, () => {
      const info = tf.backend_util.computeConv2DInfo(c.x, c.filter, c.geometry.strides, c.geometry.dilations, c.geometry.pad, c.geometry.dimRoundingMode);
      const xs = randomFloats(c.x.reduce((a, b) => a * b, 1), 3);
      const dys = randomFloats(c.x[0] * info.outHeight * info.outWidth * c.filter[3], 4);
      const x = tf.tensor4d(xs, c.x);
      const dy = tf.tensor4d(dys, [c.x[0], info.outHeight, info.outWidth, c.filter[3]]);
      const got = byTaps(x, dy, c.filter, c.geometry);
      tf.dispose([x, dy]);
      const want = reference(xs, c.x, dys, c.filter, c.geometry);
      expect(got.length).toBe(want.length);
      const scale = Math.max(...want.map(Math.abs));
      const worst = Math.max(...Array.from(got, (v, i) => Math.abs(v - want[i]!)));
      expect(scale).toBeGreaterThan(0);
      expect(worst / scale).toBeLessThan(1e-5);
    });
  }

  it('reads the top-left window of a larger dy, and releases every intermediate', () => {
    const x = tf.ones([2, 6, 6, 2]) as tf.Tensor4D;
    const dy = tf.ones([2, 5, 6, 3]) as tf.Tensor4D; // the geometry gives [2, 4, 4, 3]
    const dataBefore = tf.backend().numDataIds();
    const dw = byTaps(x, dy, [3, 3, 2, 3], { strides: 1, pad: 'valid', dilations: 1 });
    expect(Array.from(dw)).toEqual(new Array(3 * 3 * 2 * 3).fill(2 * 4 * 4));
    expect(tf.backend().numDataIds()).toBe(dataBefore);
    tf.dispose([x, dy]);
  });
});
