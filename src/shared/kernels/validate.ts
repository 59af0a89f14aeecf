import { backend_util, util, type TensorInfo } from '@tensorflow/tfjs';
import type { ConvGeometry } from './geometry.js';

/**
 * Input checks for the kernels we register in front of tfjs-backend-wasm (issue #15). Our kernels address raw wasm
 * memory by the shapes they are told, so every shape they rely on is checked against the tensors' own shapes before
 * any memory is touched. Failures throw as tfjs does (util.assert: a plain Error), with tfjs-core's wording where its
 * ops check the same thing ("Error in conv2dDerInput: …"). Each check is O(rank): nothing scales with the data.
 */

export function assertFloat32(op: string, inputs: Readonly<Record<string, TensorInfo>>): void {
  for (const [name, t] of Object.entries(inputs)) {
    util.assert(t.dtype === 'float32', () => `Error in ${op}: ${name} must be float32 (the mnist-ddp wasm kernel computes in float32), but got ${t.dtype}.`);
  }
}

export function assertRank(op: string, name: string, shape: readonly number[], rank: number): void {
  util.assert(shape.length === rank, () => `Error in ${op}: ${name} must be rank ${rank}, but got shape [${shape.join(',')}].`);
}

/**
 * dy of a convolution or pool must be the output its geometry implies, [B, OH, OW, C], or larger in height or width:
 * tfjs's kernels then read its top-left [OH, OW] window (see dy-window.ts), and so do ours. A smaller dy, or another
 * batch or channel count, is refused: the native loops would read past it.
 */
export function assertDyShape(op: string, dy: TensorInfo, g: ConvGeometry, channels: number): void {
  const expected = [g.batch, g.outH, g.outW, channels];
  const [b, h, w, c] = dy.shape;
  util.assert(dy.shape.length === 4 && b === g.batch && c === channels && h !== undefined && h >= g.outH && w !== undefined && w >= g.outW, () =>
    `Error in ${op}: dy must have shape [${expected.join(',')}] (the output of a ${g.kH}×${g.kW} window with strides ` +
    `${g.strideH},${g.strideW} over an input of [${g.batch},${g.inH},${g.inW},${g.inC}]; a dy larger in height or width ` +
    `is read in its top-left window, as tfjs's cpu kernels do), but got [${dy.shape.join(',')}].`);
}

type Pad = Parameters<typeof backend_util.checkPadOnDimRoundingMode>[1];
type RoundingMode = Parameters<typeof backend_util.checkPadOnDimRoundingMode>[2];

/**
 * Every size in the geometry is a positive whole number (non-positive or fractional strides, dilations or a window
 * larger than a 'valid' input give zero, negative or NaN sizes), so the native loops' bounds are those of the
 * tensors. Also tfjs-core's rule that a rounding mode needs an integer pad.
 */
export function assertGeometry(op: string, g: ConvGeometry, pad: Pad, dimRoundingMode: RoundingMode): void {
  backend_util.checkPadOnDimRoundingMode(op, pad, dimRoundingMode);
  const sizes = [g.batch, g.inH, g.inW, g.inC, g.outH, g.outW, g.outC, g.kH, g.kW, g.strideH, g.strideW, g.dilH, g.dilW];
  util.assert(sizes.every((v) => Number.isInteger(v) && v > 0) && Number.isInteger(g.padTop) && Number.isInteger(g.padLeft), () =>
    `Error in ${op}: input [${g.batch},${g.inH},${g.inW},${g.inC}], window ${g.kH}×${g.kW}, strides ${g.strideH},${g.strideW}, ` +
    `dilations ${g.dilH},${g.dilW} and pad ${JSON.stringify(pad)} give an output of [${g.batch},${g.outH},${g.outW},${g.outC}]; ` +
    'every size must be a positive whole number.');
}
