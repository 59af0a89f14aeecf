import {
  Conv2DBackpropFilter, util,
  type Conv2DBackpropFilterAttrs, type KernelConfig, type NamedAttrMap, type NamedTensorInfoMap, type TensorInfo,
} from '@tensorflow/tfjs';
import { gemm } from './gemm.js';
import { dyWindow } from './dy-window.js';
import { assertWasmBackend, type WasmBackend } from './heap.js';
import { nhwcConvGeometry, type ConvGeometry, type DilatedConvAttrs } from './geometry.js';
import { nativeKernels } from './native.js';
import { transpose2d } from './transpose.js';
import { winogradApplies, winogradGrads } from './winograd.js';
import { assertDyShape, assertFloat32, assertGeometry, assertRank } from './validate.js';

/** tfjs-core's name for this op in its error messages. */
const OP = 'conv2dDerFilter';

/**
 * The direct kernel (first layers: few taps, KH·KW·Cin) and the gathered col(x)ᵀ (im2col_t) pay off only where their
 * SIMD loops cover the layer: 16 output channels at a time, 4 input channels at a time. Elsewhere they run scalar
 * loops and lose to im2col + a blocked transpose (e.g. the direct kernel wins on `cnn` conv1, Cout 32, and loses on
 * `lenet` conv1, Cout 6; im2col_t wins on `cnn` conv2, Cin 32, and loses on `lenet` conv2, Cin 6).
 */
const DIRECT_MAX_TAPS = 32;
export const useDirect = (taps: number, outC: number): boolean => taps <= DIRECT_MAX_TAPS && outC % 16 === 0;
const gatherTransposed = (inC: number): boolean => inC % 4 === 0;

/**
 * dW[KH,KW,Cin,Cout] = col(x)ᵀ · dy with P = B·OH·OW rows, as one untransposed GEMM (see gemm.ts), except
 * for layers with few taps (Cin = 1), where a direct SIMD kernel avoids a GEMM of a poor shape (K = KH·KW).
 *
 * XNNPACK packs the right-hand operand of every new tensor, at a cost that grows with that operand's size: packing
 * the larger of col(x) and dy can cost more than the product itself. So the orientation is chosen per call by which
 * operand is cheaper to pack:
 *   - col(x) larger than dy (deep layers):  [Kc, P] · [P, Cout]  = dW directly; col(x)ᵀ is gathered directly when
 *     Cin is a multiple of 4, else built by im2col and a transpose.
 *   - dy larger than col(x) (few channels in, many out): [Cout, P] · [P, Kc] = dWᵀ, then a small transpose.
 */
function conv2dBackpropFilter(args: {
  inputs: NamedTensorInfoMap; backend: unknown; attrs?: NamedAttrMap;
}): TensorInfo {
  const { backend } = args;
  assertWasmBackend(backend);
  const x = args.inputs.x!;
  const dyInput = args.inputs.dy!;
  const attrs = args.attrs as unknown as Conv2DBackpropFilterAttrs & DilatedConvAttrs;
  const { filterShape } = attrs;
  // As tfjs-core's conv2DBackpropFilter op checks, plus dy's whole shape (see validate.ts).
  assertFloat32(OP, { x, dy: dyInput });
  assertRank(OP, 'x', x.shape, 4);
  assertRank(OP, 'dy', dyInput.shape, 4);
  assertRank(OP, 'filterShape', filterShape, 4);
  const { g, p, taps } = nhwcConvGeometry(Conv2DBackpropFilter, x.shape as [number, number, number, number], filterShape, attrs);
  util.assert(x.shape[3] === filterShape[2], () => `Error in ${OP}: depth of input ${x.shape[3]}) must match input depth in filter (${filterShape[2]}.`);
  util.assert(dyInput.shape[3] === filterShape[3], () => `Error in ${OP}: depth of dy (${dyInput.shape[3]}) must match output depth for filter (${filterShape[3]}).`);
  assertGeometry(OP, g, attrs.pad, attrs.dimRoundingMode);
  assertDyShape(OP, dyInput, g, g.outC);

  const { dy, release } = dyWindow(backend, dyInput, g, g.outC);
  const dw = filterGradient(backend, x, dy, g, p, taps);
  release();
  return { dataId: dw.dataId, shape: [...filterShape], dtype: 'float32' };
}

/** dW as [taps, Cout] (the filter's memory layout); dy is exactly [B, OH, OW, Cout]. */
function filterGradient(backend: WasmBackend, x: TensorInfo, dy: TensorInfo, g: ConvGeometry, p: number, taps: number): TensorInfo {
  if (winogradApplies(g)) return winogradGrads(backend, dy, g, { x }).dw!;
  if (useDirect(taps, g.outC)) {
    const dw = backend.makeOutput([taps, g.outC], 'float32');
    nativeKernels(backend).filterGradDirect(x, dy, dw, g);
    return dw;
  }
  let dw: TensorInfo;
  if (taps >= g.outC) {
    let colT: TensorInfo;
    if (gatherTransposed(g.inC)) {
      colT = backend.makeOutput([taps, p], 'float32');
      nativeKernels(backend).im2colTransposed(x, colT, g);
    } else {
      const col = backend.makeOutput([p, taps], 'float32');
      nativeKernels(backend).im2col(x, col, g);
      colT = transpose2d(backend, col, p, taps);
      backend.disposeData(col.dataId);
    }
    dw = gemm(backend, colT, dy, taps, p, g.outC);
    backend.disposeData(colT.dataId);
  } else {
    const col = backend.makeOutput([p, taps], 'float32');
    nativeKernels(backend).im2col(x, col, g);
    const dyT = transpose2d(backend, dy, p, g.outC);
    const dwT = gemm(backend, dyT, col, g.outC, p, taps);
    backend.disposeData(col.dataId);
    backend.disposeData(dyT.dataId);
    dw = transpose2d(backend, dwT, g.outC, taps);
    backend.disposeData(dwT.dataId);
  }
  return dw;
}

export const conv2dBackpropFilterConfig: KernelConfig = {
  kernelName: Conv2DBackpropFilter,
  backendName: 'wasm',
  kernelFunc: conv2dBackpropFilter as KernelConfig['kernelFunc'],
};
