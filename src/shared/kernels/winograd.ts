import type { TensorInfo } from '@tensorflow/tfjs';
import type { ConvGeometry } from './geometry.js';
import type { WasmBackend } from './heap.js';
import { nativeKernels } from './native.js';

/**
 * Winograd F(4×4, 3×3) convolutions (native/winograd.c): forward, input gradient and filter gradient of 3×3,
 * stride-1, undilated layers, any padding. They replace im2col + GEMM (and XNNPACK's forward convolution) on the
 * layers where they were measured faster; WINOGRAD_MIN_CHANNELS says which.
 */

/**
 * Layers with fewer input or output channels than this keep im2col + GEMM. The per-position GEMMs have K = Cin (or
 * Cout for dx) and the transforms cost per channel, so thin layers gain little: the `cnn`/`cnn-large` first layers
 * (Cin = 1) never qualify; the channel rule is the measured one, see bench/winograd.ts and bench/RESULTS.md.
 */
export const WINOGRAD_MIN_CHANNELS = 8;

let enabled = true;

/**
 * Turns the Winograd kernels off (every layer then takes im2col + GEMM, and XNNPACK forward) or back on, for the
 * process: bench/winograd.ts measures both routes on the same layers, and tests compare them.
 */
export function setWinogradEnabled(on: boolean): void {
  enabled = on;
}

/** Whether a layer takes the Winograd kernels: 3×3, stride 1, no dilation, channels in fours (SIMD lanes). */
export function winogradApplies(g: ConvGeometry): boolean {
  return enabled && g.kH === 3 && g.kW === 3 && g.strideH === 1 && g.strideW === 1 && g.dilH === 1 && g.dilW === 1 &&
    g.inC % 4 === 0 && g.outC % 4 === 0 && g.inC >= WINOGRAD_MIN_CHANNELS && g.outC >= WINOGRAD_MIN_CHANNELS;
}

function withScratch<T>(backend: WasmBackend, g: ConvGeometry, run: (scratch: TensorInfo) => T): T {
  const scratch = backend.makeOutput([nativeKernels(backend).winogradScratchFloats(g.inC, g.outC)], 'float32');
  try {
    return run(scratch);
  } finally {
    backend.disposeData(scratch.dataId);
  }
}

/**
 * y[B, OH, OW, Cout] = x ⋆ filter (+ bias) (then ReLU). x is [B, H, W, Cin], filter [3, 3, Cin, Cout], bias Cout
 * floats, all checked by the caller.
 */
export function winogradConv(
  backend: WasmBackend, x: TensorInfo, filter: TensorInfo, g: ConvGeometry, epilogue: { bias?: TensorInfo; relu?: boolean } = {},
): TensorInfo {
  const y = backend.makeOutput([g.batch, g.outH, g.outW, g.outC], 'float32');
  withScratch(backend, g, (scratch) => nativeKernels(backend).winogradConv(x, filter, epilogue.bias, epilogue.relu ?? false, y, scratch, g));
  return y;
}

/** dx[B, H, W, Cin] from dy, exactly [B, OH, OW, Cout]. */
export function winogradInputGrad(backend: WasmBackend, dy: TensorInfo, filter: TensorInfo, g: ConvGeometry): TensorInfo {
  const dx = backend.makeOutput([g.batch, g.inH, g.inW, g.inC], 'float32');
  withScratch(backend, g, (scratch) => nativeKernels(backend).winogradConvDx(dy, filter, dx, scratch, g));
  return dx;
}

/** dW as [9·Cin, Cout] (the filter's memory layout) from x and dy, exactly [B, OH, OW, Cout]. */
export function winogradFilterGrad(backend: WasmBackend, x: TensorInfo, dy: TensorInfo, g: ConvGeometry): TensorInfo {
  const dw = backend.makeOutput([9 * g.inC, g.outC], 'float32');
  withScratch(backend, g, (scratch) => nativeKernels(backend).winogradConvDw(x, dy, dw, scratch, g));
  return dw;
}
