import {
  Conv2DBackpropFilter, util,
  type Conv2DBackpropFilterAttrs, type KernelConfig, type NamedAttrMap, type NamedTensorInfoMap, type TensorInfo,
} from '@tensorflow/tfjs';
import { useDirect } from './conv2d.js';
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
 * The gathered col(x)ᵀ (im2col_t) pays off only where its SIMD loop covers the layer, 4 input channels at a time;
 * elsewhere it runs a scalar loop and loses to im2col + a blocked transpose (it wins on `cnn` conv2, Cin 32, and
 * loses on `lenet` conv2, Cin 6).
 */
const gatherTransposed = (inC: number): boolean => inC % 4 === 0;

/**
 * dW[KH,KW,Cin,Cout] = col(x)ᵀ · dy with P = B·OH·OW rows, as one GEMM (gemm.ts), for the layers neither Winograd
 * (3×3, stride 1: winograd.ts) nor the direct kernel (few taps, Cin = 1: conv2d.ts useDirect) takes. The GEMM's rows
 * are the larger of Kc (taps) and Cout:
 *   - Kc ≥ Cout (deep layers): [Kc, P] · [P, Cout] = dW directly; col(x)ᵀ is gathered directly when Cin is a multiple
 *     of 4, else built by im2col and a transpose.
 *   - Cout > Kc (few channels in, many out): [Cout, P] · [P, Kc] = dWᵀ, then a small transpose.
 * That rule was set by XNNPACK's cost of packing the right-hand operand on every call; gemm_f32, which replaced it
 * here, does not pack, and the rule has not been measured again on it (with our kernels on, none of the zoo's layers
 * takes the second form).
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
