import {
  backend_util, Conv2D, FusedConv2D, util,
  type Conv2DAttrs, type FusedConv2DAttrs, type KernelFunc, type NamedAttrMap, type NamedTensorInfoMap, type TensorInfo,
} from '@tensorflow/tfjs';
import { geometryOf, type ConvGeometry } from './geometry.js';
import { assertWasmBackend } from './heap.js';
import { assertGeometry } from './validate.js';
import { winogradApplies, winogradConv } from './winograd.js';

type KernelArgs = { inputs: NamedTensorInfoMap; backend: unknown; attrs?: NamedAttrMap };

/** tfjs-core's name for these ops in its error messages. */
const OP = 'conv2d';
const FUSED_OP = 'fused conv2d';

/**
 * The geometry of a convolution the Winograd kernels take (winograd.ts: 3×3, stride 1, undilated, NHWC float32,
 * channels in fours and at least WINOGRAD_MIN_CHANNELS), after the checks tfjs-core's conv2d op makes of its inputs;
 * undefined for every other convolution, which the stock kernel then gets unchanged.
 */
function winogradGeometry(op: string, x: TensorInfo, filter: TensorInfo, attrs: Conv2DAttrs): ConvGeometry | undefined {
  const nhwc = backend_util.convertConv2DDataFormat(attrs.dataFormat) === 'channelsLast';
  const candidate = nhwc && x.shape.length === 4 && filter.shape.length === 4 && x.dtype === 'float32' && filter.dtype === 'float32' &&
    filter.shape[0] === 3 && filter.shape[1] === 3;
  if (!candidate) return undefined;
  util.assert(x.shape[3] === filter.shape[2], () => `Error in ${op}: depth of input (${x.shape[3]}) must match input depth for filter ${filter.shape[2]}.`);
  const info = backend_util.computeConv2DInfo(
    x.shape as [number, number, number, number], filter.shape as [number, number, number, number],
    attrs.strides, attrs.dilations ?? 1, attrs.pad, attrs.dimRoundingMode,
  );
  const g = geometryOf(info);
  if (!winogradApplies(g)) return undefined;
  assertGeometry(op, g, attrs.pad, attrs.dimRoundingMode);
  return g;
}

/**
 * Conv2D in front of tfjs-backend-wasm's (XNNPACK's) for the layers the Winograd kernels take. Before touching memory
 * it checks what tfjs-core's conv2d op checks, so a direct runKernel call with mismatched shapes throws as the op
 * would.
 */
export function conv2dWinogradPath(stock: KernelFunc): KernelFunc {
  return ((args: KernelArgs) => {
    const x = args.inputs.x!;
    const filter = args.inputs.filter!;
    const g = winogradGeometry(OP, x, filter, args.attrs as unknown as Conv2DAttrs);
    if (!g) return stock(args as never);
    const { backend } = args;
    assertWasmBackend(backend);
    return winogradConv(backend, x, filter, g);
  }) as KernelFunc;
}

/**
 * FusedConv2D (what tfjs-layers' conv2d runs: convolution, bias, activation) likewise, for a bias of Cout values
 * along the last axis and a linear or ReLU activation, which the Winograd output transform applies as it writes each
 * tile. Other activations and bias shapes go to the stock kernel.
 */
export function fusedConv2dWinogradPath(stock: KernelFunc): KernelFunc {
  return ((args: KernelArgs) => {
    const { x, filter, bias, preluActivationWeights } = args.inputs;
    const attrs = args.attrs as unknown as FusedConv2DAttrs;
    const epilogueOk = !preluActivationWeights && (attrs.activation === 'linear' || attrs.activation === 'relu' || attrs.activation === undefined);
    if (!epilogueOk || !x || !filter) return stock(args as never);
    const outC = filter.shape[3];
    const biasOk = !bias || (bias.dtype === 'float32' && bias.shape.length >= 1 && bias.shape[bias.shape.length - 1] === outC &&
      util.sizeFromShape(bias.shape) === outC);
    if (!biasOk) return stock(args as never);
    const g = winogradGeometry(FUSED_OP, x, filter, attrs);
    if (!g) return stock(args as never);
    const { backend } = args;
    assertWasmBackend(backend);
    return winogradConv(backend, x, filter, g, { bias, relu: attrs.activation === 'relu' });
  }) as KernelFunc;
}

export const CONV2D_PATHS: ReadonlyArray<{ kernelName: string; wrap: (stock: KernelFunc) => KernelFunc }> = [
  { kernelName: Conv2D, wrap: conv2dWinogradPath },
  { kernelName: FusedConv2D, wrap: fusedConv2dWinogradPath },
];
