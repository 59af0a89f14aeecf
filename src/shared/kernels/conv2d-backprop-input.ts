import {
  Conv2DBackpropInput, util,
  type Conv2DBackpropInputAttrs, type KernelConfig, type NamedAttrMap, type NamedTensorInfoMap, type TensorInfo,
} from '@tensorflow/tfjs';
import { gemm } from './gemm.js';
import { dyWindow } from './dy-window.js';
import { assertWasmBackend } from './heap.js';
import { nhwcConvGeometry, type DilatedConvAttrs } from './geometry.js';
import { nativeKernels } from './native.js';
import { transpose2d } from './transpose.js';
import { winogradApplies, winogradGrads } from './winograd.js';
import { assertDyShape, assertFloat32, assertGeometry, assertRank } from './validate.js';

/** tfjs-core's name for this op in its error messages. */
const OP = 'conv2dDerInput';

/**
 * dx = col2im(dy · Wᵀ): one untransposed GEMM [P, Cout] · [Cout, KH·KW·Cin] followed by the adjoint of
 * im2col. This replaces tfjs-backend-wasm's naive Conv2DBackpropInput (a scalar loop per output pixel, an order of
 * magnitude slower than the GEMM on the `cnn` layers) and handles every stride, dilation and padding with the same
 * code; 3×3 stride-1 layers take the Winograd kernel instead (winograd.ts). Checks its inputs as tfjs-core's conv2DBackpropInput op does, and dy's whole shape (see validate.ts).
 */
function conv2dBackpropInput(args: {
  inputs: NamedTensorInfoMap; backend: unknown; attrs?: NamedAttrMap;
}): TensorInfo {
  const { backend } = args;
  assertWasmBackend(backend);
  const dyInput = args.inputs.dy!;
  const filter = args.inputs.filter!;
  const attrs = args.attrs as unknown as Conv2DBackpropInputAttrs & DilatedConvAttrs;
  const { inputShape } = attrs;
  assertFloat32(OP, { dy: dyInput, filter });
  assertRank(OP, 'inputShape', inputShape, 4);
  assertRank(OP, 'dy', dyInput.shape, 4);
  assertRank(OP, 'filter', filter.shape, 4);
  const { g, p, taps } = nhwcConvGeometry(Conv2DBackpropInput, inputShape, filter.shape as [number, number, number, number], attrs);
  util.assert(inputShape[3] === filter.shape[2], () => `Error in ${OP}: depth of input (${inputShape[3]}) must match input depth for filter ${filter.shape[2]}.`);
  util.assert(dyInput.shape[3] === filter.shape[3], () => `Error in ${OP}: depth of output (${dyInput.shape[3]}) must match output depth for filter ${filter.shape[3]}.`);
  assertGeometry(OP, g, attrs.pad, attrs.dimRoundingMode);
  assertDyShape(OP, dyInput, g, g.outC);

  const { dy, release } = dyWindow(backend, dyInput, g, g.outC);
  if (winogradApplies(g)) {
    const { dx } = winogradGrads(backend, dy, g, { filter });
    release();
    return dx!;
  }
  const wT = transpose2d(backend, filter, taps, g.outC);
  const colGrad = gemm(backend, dy, wT, p, g.outC, taps);
  backend.disposeData(wT.dataId);
  release();
  const dx = backend.makeOutput([...inputShape], 'float32');
  nativeKernels(backend).col2im(colGrad, dx, g);
  backend.disposeData(colGrad.dataId);
  return dx;
}

export const conv2dBackpropInputConfig: KernelConfig = {
  kernelName: Conv2DBackpropInput,
  backendName: 'wasm',
  kernelFunc: conv2dBackpropInput as KernelConfig['kernelFunc'],
};
