import {
  backend_util, Conv2D, FusedConv2D, util,
  type Conv2DAttrs, type FusedConv2DAttrs, type KernelFunc, type NamedAttrMap, type NamedTensorInfoMap, type TensorInfo,
} from '@tensorflow/tfjs';
import { geometryOf, type ConvGeometry } from './geometry.js';
import { assertWasmBackend, withScratch, type WasmBackend } from './heap.js';
import { nativeKernels, type BatchMoments } from './native.js';
import { makePooledWithCodes, type PooledWithCodes } from './pool-codes.js';
import { assertGeometry } from './validate.js';
import { convKernelsEnabled, winogradApplies, winogradConv, winogradConvTo, type ConvEpilogue } from './winograd.js';

type KernelArgs = { inputs: NamedTensorInfoMap; backend: unknown; attrs?: NamedAttrMap };

/** tfjs-core's name for these ops in its error messages. */
const OP = 'conv2d';
const FUSED_OP = 'fused conv2d';

/**
 * Layers with at most this many taps (KH·KW·Cin: first layers, Cin = 1) take the direct kernels, forward
 * (native/conv_direct.c) and filter gradient (native/kernels.c filter_grad_direct), where neither a GEMM (K too short)
 * nor Winograd (one input channel) pays off. Their SIMD loops cover 16 output channels at a time: with Cout not a
 * multiple of 16 they would run scalar loops and lose (the filter gradient wins on `cnn` conv1, Cout 32, and loses on
 * `lenet` conv1, Cout 6). `npx tsx bench/conv-layers.ts` (B=64, median of 15, M3), forward: 1.18 vs XNNPACK's
 * 1.84 ms on `cnn`'s conv1, 1.41 vs 2.11 ms on `cnn-large`'s conv1a.
 */
const DIRECT_MAX_TAPS = 32;

/** Whether the direct kernels take a layer of `taps` taps and `outC` output channels (off with our kernels switched off). */
export const useDirect = (taps: number, outC: number): boolean => convKernelsEnabled() && taps <= DIRECT_MAX_TAPS && outC % 16 === 0;

type Route = { g: ConvGeometry; kernel: 'winograd' | 'direct' | 'empty' };

/**
 * Which of our kernels takes a convolution, after the checks tfjs-core's conv2d op makes of its inputs: Winograd
 * (winograd.ts: 3×3, stride 1, undilated, channels in fours) or the direct kernel
 * (few taps); undefined for every other convolution, which the stock kernel then gets unchanged. NHWC float32 only.
 */
function route(op: string, x: TensorInfo, filter: TensorInfo, attrs: Conv2DAttrs): Route | undefined {
  const nhwc = backend_util.convertConv2DDataFormat(attrs.dataFormat) === 'channelsLast';
  const candidate = nhwc && x.shape.length === 4 && filter.shape.length === 4 && x.dtype === 'float32' && filter.dtype === 'float32';
  if (!candidate) return undefined;
  util.assert(x.shape[3] === filter.shape[2], () => `Error in ${op}: depth of input (${x.shape[3]}) must match input depth for filter ${filter.shape[2]}.`);
  const info = backend_util.computeConv2DInfo(
    x.shape as [number, number, number, number], filter.shape as [number, number, number, number],
    attrs.strides, attrs.dilations ?? 1, attrs.pad, attrs.dimRoundingMode,
  );
  const g = geometryOf(info);
  // An empty output (batch, output side or Cout of 0) is returned as such, without a kernel: tfjs-backend-wasm's own
  // kernel reads out of bounds on some of them (x [1,2,2,4] ⋆ [3,3,4,4] 'valid', called through runKernel). Other
  // non-positive sizes (no input channels, a negative side) are the stock kernel's.
  const sizes = [g.batch, g.outH, g.outW, g.outC];
  if (g.inC > 0 && sizes.every((d) => Number.isInteger(d) && d >= 0) && sizes.includes(0)) return { g, kernel: 'empty' };
  if ([g.inC, ...sizes].some((d) => Number.isInteger(d) && d <= 0)) return undefined;
  const kernel = winogradApplies(g) ? 'winograd' : useDirect(g.kH * g.kW * g.inC, g.outC) ? 'direct' : undefined;
  if (!kernel) return undefined;
  assertGeometry(op, g, attrs.pad, attrs.dimRoundingMode);
  return { g, kernel };
}

function convolve(backend: WasmBackend, x: TensorInfo, filter: TensorInfo, { g, kernel }: Route, epilogue: ConvEpilogue = {}): TensorInfo {
  if (kernel === 'winograd') return winogradConv(backend, x, filter, g, epilogue);
  const y = backend.makeOutput([g.batch, g.outH, g.outW, g.outC], 'float32');
  if (kernel === 'empty') return y;
  nativeKernels(backend).convDirect(x, filter, epilogue.bias, epilogue.relu ?? false, { y }, g);
  return y;
}

/**
 * The 2×2, stride-2 max pool of relu(x ⋆ filter + bias) and its codes (pool-codes.ts), from one kernel call that
 * pools each block of the convolution's output while the block is in cache and never writes the output itself
 * (conv-relu-pool.ts). Undefined where our kernels do not take the layer (route), or its output is empty; the caller
 * then convolves another way. bias is Cout float32 values, checked by the caller.
 */
export function convolveReluPool(backend: WasmBackend, x: TensorInfo, filter: TensorInfo, bias: TensorInfo, attrs: Conv2DAttrs): PooledWithCodes | undefined {
  const r = route(FUSED_OP, x, filter, attrs);
  if (!r || r.kernel === 'empty') return undefined;
  const { g } = r;
  const out = makePooledWithCodes(backend, [g.batch, g.outH, g.outW, g.outC]);
  // No window fits in a single row or column of output: nothing to compute.
  if (g.outH < 2 || g.outW < 2) return out;
  const epilogue = { bias, relu: true };
  if (r.kernel === 'winograd') {
    winogradConvTo(backend, x, filter, g, epilogue, out);
    return out;
  }
  withScratch(backend, 2 * g.outW * g.outC, (rows) => nativeKernels(backend).convDirect(x, filter, bias, true, out, g, rows));
  return out;
}

/**
 * The convolution's output z and its batch mean and biased variance per channel, which the kernel computes as it
 * writes z (Winograd per tile, the direct kernel per row: no other pass over it), for training-mode batch norm after
 * it (conv-batch-norm.ts). Undefined where our kernels do not take the layer (route) or its output is empty; the
 * caller then convolves another way.
 */
export function convolveWithMoments(backend: WasmBackend, x: TensorInfo, filter: TensorInfo, attrs: Conv2DAttrs): ({ z: TensorInfo } & BatchMoments) | undefined {
  const r = route(OP, x, filter, attrs);
  if (!r || r.kernel === 'empty') return undefined;
  const { g } = r;
  const out = {
    z: backend.makeOutput([g.batch, g.outH, g.outW, g.outC], 'float32'),
    mean: backend.makeOutput([g.outC], 'float32'),
    variance: backend.makeOutput([g.outC], 'float32'),
  };
  try {
    if (r.kernel === 'winograd') winogradConvTo(backend, x, filter, g, {}, { y: out.z }, out);
    else withScratch(backend, 4 * g.outC, (stats) => nativeKernels(backend).convDirect(x, filter, undefined, false, { y: out.z }, g, stats, out));
  } catch (err) {
    for (const t of Object.values(out)) backend.disposeData(t.dataId);
    throw err;
  }
  return out;
}

/**
 * Conv2D in front of tfjs-backend-wasm's (XNNPACK's) for the layers our kernels take (route). Before touching memory
 * it checks what tfjs-core's conv2d op checks, so a direct runKernel call with mismatched shapes throws as the op
 * would.
 */
export function conv2dNativePath(stock: KernelFunc): KernelFunc {
  return ((args: KernelArgs) => {
    const x = args.inputs.x!;
    const filter = args.inputs.filter!;
    const r = route(OP, x, filter, args.attrs as unknown as Conv2DAttrs);
    if (!r) return stock(args as never);
    const { backend } = args;
    assertWasmBackend(backend);
    return convolve(backend, x, filter, r);
  }) as KernelFunc;
}

/**
 * FusedConv2D (what tfjs-layers' conv2d runs: convolution, bias, activation) likewise, for a bias of Cout values
 * along the last axis and a linear or ReLU activation, which our kernels apply as they write each output. Other
 * activations and bias shapes go to the stock kernel.
 */
export function fusedConv2dNativePath(stock: KernelFunc): KernelFunc {
  return ((args: KernelArgs) => {
    const { x, filter, bias, preluActivationWeights } = args.inputs;
    const attrs = args.attrs as unknown as FusedConv2DAttrs;
    const epilogueOk = !preluActivationWeights && (attrs.activation === 'linear' || attrs.activation === 'relu');
    if (!epilogueOk || !x || !filter) return stock(args as never);
    const outC = filter.shape[3];
    const biasOk = !bias || (bias.dtype === 'float32' && bias.shape.length >= 1 && bias.shape[bias.shape.length - 1] === outC &&
      util.sizeFromShape(bias.shape) === outC);
    if (!biasOk) return stock(args as never);
    const r = route(FUSED_OP, x, filter, attrs);
    if (!r) return stock(args as never);
    const { backend } = args;
    assertWasmBackend(backend);
    return convolve(backend, x, filter, r, { bias, relu: attrs.activation === 'relu' });
  }) as KernelFunc;
}

export const CONV2D_PATHS: ReadonlyArray<{ kernelName: string; wrap: (stock: KernelFunc) => KernelFunc }> = [
  { kernelName: Conv2D, wrap: conv2dNativePath },
  { kernelName: FusedConv2D, wrap: fusedConv2dNativePath },
];
