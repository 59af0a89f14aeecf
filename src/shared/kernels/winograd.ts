import type { TensorInfo } from '@tensorflow/tfjs';
import type { ConvGeometry } from './geometry.js';
import { withScratch as withBackendScratch, type WasmBackend } from './heap.js';
import { nativeKernels, type BatchMoments, type ConvOutput, type WinogradGradSource, type WinogradTile } from './native.js';

/**
 * Winograd F(4×4, 3×3) and F(5×5, 3×3) convolutions (native/winograd.c; winogradTile picks the tile per layer):
 * forward, input gradient and filter gradient of 3×3, stride-1, undilated layers, any padding. They replace im2col +
 * GEMM (and XNNPACK's forward convolution) on the layers where they were measured faster: winogradApplies says which.
 * `npx tsx bench/conv-layers.ts --reps 11` (B=64, M3, 2026-12-05), forward / dx / dW speed-up over im2col + GEMM and
 * XNNPACK: `cnn` conv2 (unpooled, 4-tiles) 3.5 / 3.0 / 3.7; `cnn-large` conv1b (4-tiles) 3.5 / 5.5 / 8.1, conv2a
 * (5-tiles) 3.8 / 3.5 / 4.3, conv2b (5-tiles) 3.8 / 4.6 / 5.2.
 *
 * Non-finite values spread further than in a direct convolution: a NaN or ±Inf anywhere in a 6×6 (7×7) input tile
 * makes all 16 (25) outputs of its tile NaN (the transforms add and subtract the tile's values, and Inf − Inf is NaN).
 * Every output that is non-finite on the stock kernels is non-finite here too, so the NaN guard stops the same steps;
 * where the tiles skip an output row no pool window reads, a non-finite input only that row reads makes all of dW NaN
 * (native/winograd.c poison_uncovered).
 */

/**
 * The scratch grows with Cin·Cout (98 floats per pair: two filter-sized areas of 49 positions, for 5×5 tiles) plus
 * the tile blocks' 49·32·(2·Cin + Cout) floats: about 108 M floats at 1024 × 1024 channels. The cap on the pairs keeps
 * winograd_scratch_floats within its int; wider layers keep im2col.
 */
const WINOGRAD_MAX_CHANNEL_PAIRS = 1 << 20;

let enabled = true;

/**
 * Turns our convolution kernels (Winograd, and conv2d.ts's direct kernels for first layers) off for the process, or
 * back on: layers then take im2col + GEMM for their gradients and XNNPACK for their forward pass. bench/conv-layers.ts
 * measures both routes on the same layers.
 */
export function setConvKernelsEnabled(on: boolean): void {
  enabled = on;
}

/** Whether setConvKernelsEnabled left our convolution kernels on (the default). */
export function convKernelsEnabled(): boolean {
  return enabled;
}

/**
 * Whether a layer takes the Winograd kernels: 3×3, stride 1, no dilation, channels in fours (SIMD lanes). Thin layers
 * win too: on 28×28 inputs at B=64 (`npx tsx bench/conv-layers.ts --thin --reps 11`, M3) forward / dx / dW ran
 * 1.3 / 2.2 / 4.8× faster than im2col + GEMM at 4 → 4 channels, 1.8 / 4.2 / 4.6× at 8 → 8. The first layers
 * (Cin = 1) do not qualify and take the direct kernel (conv2d.ts).
 */
export function winogradApplies(g: ConvGeometry): boolean {
  return enabled && g.kH === 3 && g.kW === 3 && g.strideH === 1 && g.strideW === 1 && g.dilH === 1 && g.dilW === 1 &&
    g.inC % 4 === 0 && g.outC % 4 === 0 && g.inC * g.outC <= WINOGRAD_MAX_CHANNEL_PAIRS;
}

/**
 * The tile side for a layer: the one whose GEMMs do fewer multiply-adds, which is the one with fewer transformed
 * positions, tiles × (tile + 2)² (each position is one row of a [Cin] × [Cout] product); on a tie, 4 (its transforms
 * cost less per output). The tiles cover the convolution's output, or with `covered` 'pooled' (a 2×2 max pool reads
 * it, and nothing else: conv-relu-pool.ts) only the part some window reads, 2·⌊OH/2⌋ × 2·⌊OW/2⌋ (native/winograd.c
 * pooled_part). Per image: `cnn-large`'s 14×14 layers, 5-tiles 9 × 49 = 441 positions, 4-tiles 16 × 36 = 576; its
 * 28×28 layers, 1 764 either way; `cnn`'s conv2 (11×11, pooled: 10×10), 4 × 49 = 196 against 9 × 36 = 324.
 */
export function winogradTile(g: ConvGeometry, covered: 'all' | 'pooled'): WinogradTile {
  const [h, w] = covered === 'pooled' ? pooledPart(g) : [g.outH, g.outW];
  const positions = (tile: number): number => Math.ceil(h / tile) * Math.ceil(w / tile) * (tile + 2) ** 2;
  return positions(5) < positions(4) ? 5 : 4;
}

/** The output rows and columns a 2×2, stride-2 pool reads (native/winograd.c pooled_part). */
const pooledPart = (g: ConvGeometry): [number, number] => [2 * Math.floor(g.outH / 2), 2 * Math.floor(g.outW / 2)];

/** run(scratch) with the scratch the Winograd kernels need for the layer. */
function withScratch<T>(backend: WasmBackend, g: ConvGeometry, run: (scratch: TensorInfo) => T): T {
  return withBackendScratch(backend, nativeKernels(backend).winogradScratchFloats(g.inC, g.outC), run);
}

/** What a convolution's kernel does as it writes each output: + bias (Cout floats), then ReLU. */
export interface ConvEpilogue {
  bias?: TensorInfo;
  relu?: boolean;
}

/**
 * y[B, OH, OW, Cout] = x ⋆ filter, then the epilogue. x is [B, H, W, Cin], filter [3, 3, Cin, Cout], all checked by
 * the caller.
 */
export function winogradConv(backend: WasmBackend, x: TensorInfo, filter: TensorInfo, g: ConvGeometry, epilogue: ConvEpilogue = {}): TensorInfo {
  const y = backend.makeOutput([g.batch, g.outH, g.outW, g.outC], 'float32');
  winogradConvTo(backend, x, filter, g, epilogue, { y });
  return y;
}

/**
 * The same convolution written to `out`: its output, or only its 2×2 max pool and the pool's codes. With `moments`
 * (and out.y), also the output's batch mean and biased variance per channel, folded tile by tile as it is written
 * (batch norm's moments without another pass over it).
 */
export function winogradConvTo(
  backend: WasmBackend, x: TensorInfo, filter: TensorInfo, g: ConvGeometry, epilogue: ConvEpilogue, out: ConvOutput,
  moments?: BatchMoments,
): void {
  const pooled = !('y' in out);
  const tile = winogradTile(g, pooled ? 'pooled' : 'all');
  const convolve = (target: ConvOutput): void =>
    withScratch(backend, g, (scratch) => nativeKernels(backend).winogradConv(x, filter, epilogue.bias, epilogue.relu ?? false, target, scratch, tile, g, moments));
  if (!pooled || tile === 4) return convolve(out);
  // 5-tiles do not keep the pool's windows whole: the part of the output the windows read is staged, then pooled.
  const [h, w] = pooledPart(g);
  const staged = g.batch * h * w * g.outC;
  withBackendScratch(backend, staged, (scratch) => convolve({ ...out, staged: scratch }));
}

/**
 * The gradients of the convolution of x by filter, in one sweep over the tiles (each tile's transform of dy serves
 * both): dx [B, H, W, Cin] when `from.filter` is given, dW as [9·Cin, Cout] (the filter's memory layout) when `from.x`
 * is. dy is exactly [B, OH, OW, Cout]; or with source.pool exactly pool.pooled's shape (the gradient of a ReLU and 2×2
 * max pool of the output, unpooled tile by tile in cache); or the gradient of batch norm (then a ReLU, then the pool)
 * of the output (source.batchNorm: batch norm's dx is computed tile by tile from dy and the convolution's output, and
 * never written).
 */
export function winogradGrads(
  backend: WasmBackend, dy: TensorInfo, g: ConvGeometry, from: { filter?: TensorInfo; x?: TensorInfo }, source: WinogradGradSource = {},
): { dx?: TensorInfo; dw?: TensorInfo } {
  const out = {
    dx: from.filter ? backend.makeOutput([g.batch, g.inH, g.inW, g.inC], 'float32') : undefined,
    dw: from.x ? backend.makeOutput([9 * g.inC, g.outC], 'float32') : undefined,
  };
  try {
    // Through a pool alone the tiles cover the windows' part; batch norm's gradient reaches every output.
    const tile = winogradTile(g, source.pool !== undefined && source.batchNorm === undefined ? 'pooled' : 'all');
    withScratch(backend, g, (scratch) => nativeKernels(backend).winogradConvGrad(from, dy, out, source, scratch, tile, g));
  } catch (err) {
    for (const t of [out.dx, out.dw]) if (t) backend.disposeData(t.dataId);
    throw err;
  }
  return out;
}
