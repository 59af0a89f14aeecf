import type { TensorInfo } from '@tensorflow/tfjs';
import { entryOf, type WasmBackend } from './heap.js';
import type { ConvGeometry } from './geometry.js';
import type { DropoutParams } from '../train/dropout.js';
import type { PooledWithCodes } from './pool-codes.js';
import { kernelsModule } from './module.js';

/**
 * Our WebAssembly SIMD kernels (native/*.c), instantiated on tfjs-backend-wasm's own linear memory so they
 * read inputs and write their freshly allocated outputs directly there, without copies. Pointers are the tensors'
 * byte offsets in that memory.
 */
interface NativeExports {
  im2col(x: number, col: number, geometry: number): void;
  im2col_t(x: number, colT: number, geometry: number): void;
  filter_grad_direct(x: number, dy: number, pooled: number, codes: number, bnZ: number, bnCoef: number, relu: number, scratch: number, dw: number, outC: number,
    geometry: number): void;
  col2im(col: number, dx: number, geometry: number): void;
  max_pool_grad(x: number, dy: number, dx: number, geometry: number): void;
  sum_rows(x: number, out: number, rows: number, channels: number): void;
  mean_rows(x: number, out: number, rows: number, channels: number): void;
  batch_norm(x: number, mean: number, variance: number, offset: number, scale: number, epsilon: number, relu: number, out: number, rows: number, channels: number): void;
  variance_rows(x: number, mean: number, out: number, rows: number, channels: number): void;
  moments_rows(x: number, mean: number, variance: number, stats: number, rows: number, channels: number): void;
  batch_norm_relu_pool(x: number, mean: number, variance: number, offset: number, scale: number, epsilon: number, factors: number, pooled: number, codes: number, geometry: number): void;
  batch_norm_train_grad(x: number, dy: number, mean: number, variance: number, scale: number, offset: number, epsilon: number, relu: number, dx: number, dScale: number, dOffset: number, rows: number, channels: number): void;
  batch_norm_pool_grad(x: number, dy: number, pooled: number, codes: number, mean: number, variance: number, scale: number, offset: number, epsilon: number,
    scratch: number, dx: number, dScale: number, dOffset: number, geometry: number): void;
  batch_norm_grad(x: number, dy: number, mean: number, variance: number, scale: number, epsilon: number, dx: number, dMean: number, dVariance: number, dScale: number, dOffset: number, rows: number, channels: number): void;
  channel_op(x: number, v: number, out: number, rows: number, channels: number, op: ChannelOp): void;
  relu_grad(dy: number, y: number, out: number, n: number): void;
  transpose_2d(input: number, out: number, rows: number, cols: number): void;
  gemm_f32(a: number, b: number, c: number, m: number, k: number, n: number, aTransposed: number): void;
  bias_relu_rows(c: number, bias: number, m: number, n: number, relu: number): void;
  max_pool_grad_2x2(x: number, dy: number, dx: number, channels: number, geometry: number): void;
  max_pool_2x2_codes(z: number, pooled: number, codes: number, channels: number, geometry: number): void;
  max_pool_grad_2x2_codes(dy: number, pooled: number, codes: number, dz: number, channels: number, geometry: number): void;
  masked_sum_rows(x: number, mask: number, out: number, rows: number, channels: number): void;
  conv_direct(x: number, w: number, bias: number, y: number, pooled: number, codes: number, mean: number, variance: number, scratch: number, outC: number,
    flags: number, geometry: number): void;
  winograd_scratch_floats(inC: number, outC: number): number;
  dropout(x: number, y: number, samples: number, perSample: number, seedMix: number, keyLow: number, keyHigh: number, threshold: number, scale: number): void;
  winograd_conv(x: number, w: number, bias: number, y: number, pooled: number, codes: number, mean: number, variance: number, scratch: number, outC: number,
    flags: number, tile: number, geometry: number): void;
  winograd_conv_grad(x: number, dy: number, pooled: number, codes: number, bnZ: number, bnCoef: number, w: number, dx: number, dw: number,
    scratch: number, outC: number, flags: number, tile: number, geometry: number): void;
  batch_norm_grad_params(x: number, dy: number, pooled: number, codes: number, mean: number, variance: number, scale: number, offset: number,
    epsilon: number, relu: number, scratch: number, dScale: number, dOffset: number, coef: number, geometry: number): void;
}

/**
 * The op codes of native/kernels.c `channel_op`: out <- x op v, or v op x for the subFrom / divInto codes, where v holds one
 * value per channel (the last axis) or one value in all.
 */
export const CHANNEL_OP = { mul: 0, sub: 1, subFrom: 2, div: 3, divInto: 4, add: 5 } as const;
export type ChannelOp = (typeof CHANNEL_OP)[keyof typeof CHANNEL_OP];

/** The flags of a convolution's epilogue (native/kernels.h EPILOGUE_BIAS, EPILOGUE_RELU). */
const epilogueFlags = (bias: TensorInfo | undefined, relu: boolean): number => (bias ? 1 : 0) | (relu ? 2 : 0);

/** The flags of winograd_conv_grad (native/winograd.c WINO_GRAD_DX, WINO_GRAD_DW, WINO_GRAD_BN_RELU). */
const winogradGradFlags = (dx: boolean, dw: boolean, batchNormRelu: boolean): number => (dx ? 1 : 0) | (dw ? 2 : 0) | (batchNormRelu ? 4 : 0);

/**
 * Where a convolution kernel writes: its output y, or only the 2×2, stride-2 max pool of it and the pool's codes
 * (with `staged`, scratch where winograd_conv's 5-tiles write the part of the output the pool reads).
 */
export type ConvOutput = { y: TensorInfo } | (PooledWithCodes & { staged?: TensorInfo });

/** A batch's mean and biased variance per channel ([C] each). */
export interface BatchMoments {
  mean: TensorInfo;
  variance: TensorInfo;
}

/** Batch norm's per-channel tensors: the batch moments, scale and offset ([C] each). */
export interface BatchNormParams extends BatchMoments {
  scale: TensorInfo;
  offset: TensorInfo;
}

/** Winograd's tile side: F(4×4, 3×3) or F(5×5, 3×3) (native/winograd.c). */
export type WinogradTile = 4 | 5;

/**
 * What the gradient a Winograd gradient kernel takes is the gradient of (winograd.c dy_source): the convolution's
 * output (neither given); a ReLU and 2×2 max pool of it (pool: dy is the pooled gradient); or training-mode batch norm
 * of it (batchNorm: z is the convolution's output, coef batchNormGradParams's), then a ReLU if relu, then with pool
 * also the max pool.
 */
export interface WinogradGradSource {
  pool?: PooledWithCodes;
  batchNorm?: { z: TensorInfo; coef: TensorInfo; relu: boolean };
}

/** The pooled output and codes a pooled gradient came through, and the direct filter gradient's scratch (2·OW·Cout floats). */
export type PooledGradient = PooledWithCodes & { scratch: TensorInfo };

/** int32 fields of native/kernels.h `conv_geometry`. */
const GEOMETRY_INTS = 14;

class NativeKernels {
  private readonly exports: NativeExports;
  private readonly geometryPtr: number;

  constructor(private readonly backend: WasmBackend) {
    const module = backend.wasm;
    const memory = module.asm?.memory;
    if (!(memory instanceof WebAssembly.Memory) || typeof module._malloc !== 'function') {
      throw new Error('mnist-ddp wasm kernels: tfjs-backend-wasm does not expose its memory (asm.memory, _malloc)');
    }
    const instance = new WebAssembly.Instance(kernelsModule(), { env: { memory } });
    this.exports = instance.exports as unknown as NativeExports;
    // The geometry, written before each call; allocated once from tfjs's heap so we never own memory.
    this.geometryPtr = module._malloc(GEOMETRY_INTS * 4);
  }

  private ptr(info: TensorInfo): number {
    return entryOf(this.backend, info).memoryOffset;
  }

  private geometry(g: ConvGeometry): number {
    this.backend.wasm.HEAP32.set([g.batch, g.inH, g.inW, g.inC, g.outH, g.outW, g.kH, g.kW, g.strideH, g.strideW, g.dilH, g.dilW, g.padTop, g.padLeft], this.geometryPtr >> 2);
    return this.geometryPtr;
  }

  im2col(x: TensorInfo, col: TensorInfo, g: ConvGeometry): void {
    this.exports.im2col(this.ptr(x), this.ptr(col), this.geometry(g));
  }

  /** colT[KH·KW·C, P]: im2col's transpose, without building col. */
  im2colTransposed(x: TensorInfo, colT: TensorInfo, g: ConvGeometry): void {
    this.exports.im2col_t(this.ptr(x), this.ptr(colT), this.geometry(g));
  }

  /**
   * dW[KH, KW, C, Cout] computed without a GEMM (for layers with few taps; Cout a multiple of 16); overwrites dw. With
   * `pooled`, dy is the gradient of a ReLU and a 2×2 max pool after the convolution (PooledGradient); with
   * `batchNorm`, the gradient of batch norm (then a ReLU if relu) of the convolution's output z, whose rows are
   * computed in `batchNorm.scratch` (OW·Cout floats) from coef (batchNormGradParams).
   */
  filterGradDirect(
    x: TensorInfo, dy: TensorInfo, dw: TensorInfo, g: ConvGeometry, pooled?: PooledGradient,
    batchNorm?: { z: TensorInfo; coef: TensorInfo; relu: boolean; scratch: TensorInfo },
  ): void {
    const [pool, codes] = pooled ? [this.ptr(pooled.pooled), this.ptr(pooled.codes)] : [0, 0];
    const scratch = pooled ? this.ptr(pooled.scratch) : batchNorm ? this.ptr(batchNorm.scratch) : 0;
    const [z, coef, relu] = batchNorm ? [this.ptr(batchNorm.z), this.ptr(batchNorm.coef), batchNorm.relu ? 1 : 0] : [0, 0, 0];
    this.exports.filter_grad_direct(this.ptr(x), this.ptr(dy), pool, codes, z, coef, relu, scratch, this.ptr(dw), g.outC, this.geometry(g));
  }

  /** Overwrites dx (no need to zero it). */
  col2im(col: TensorInfo, dx: TensorInfo, g: ConvGeometry): void {
    this.exports.col2im(this.ptr(col), this.ptr(dx), this.geometry(g));
  }

  /** Overwrites dx. `g` describes the pool: k* is the window, stride/pad as the pool's. */
  maxPoolGrad(x: TensorInfo, dy: TensorInfo, dx: TensorInfo, g: ConvGeometry): void {
    this.exports.max_pool_grad(this.ptr(x), this.ptr(dy), this.ptr(dx), this.geometry(g));
  }

  sumRows(x: TensorInfo, out: TensorInfo, rows: number, channels: number): void {
    this.exports.sum_rows(this.ptr(x), this.ptr(out), rows, channels);
  }

  /** out[channels] <- column sums of x[rows, channels] over the elements where mask (same shape) is > 0. */
  maskedSumRows(x: TensorInfo, mask: TensorInfo, out: TensorInfo, rows: number, channels: number): void {
    this.exports.masked_sum_rows(this.ptr(x), this.ptr(mask), this.ptr(out), rows, channels);
  }

  /** out[channels] <- column means of x[rows, channels], summed in float64 and rounded once. */
  meanRows(x: TensorInfo, out: TensorInfo, rows: number, channels: number): void {
    this.exports.mean_rows(this.ptr(x), this.ptr(out), rows, channels);
  }

  /**
   * out[rows, channels] <- (x - mean) · scale / sqrt(variance + epsilon) + offset, every parameter [channels], then
   * max(·, 0) with relu; overwrites out.
   */
  batchNorm(x: TensorInfo, mean: TensorInfo, variance: TensorInfo, offset: TensorInfo | undefined, scale: TensorInfo | undefined, epsilon: number, out: TensorInfo, rows: number, channels: number, relu = false): void {
    this.exports.batch_norm(this.ptr(x), this.ptr(mean), this.ptr(variance), offset ? this.ptr(offset) : 0, scale ? this.ptr(scale) : 0, epsilon, relu ? 1 : 0, this.ptr(out), rows, channels);
  }

  /**
   * batchNorm with ReLU of x [B, H, W, C], pooled 2×2 at stride 2 with codes as it is computed (pool-codes.ts); the
   * normalised output is not written. factors is scratch of C floats; `g` describes the pool; C in fours.
   */
  batchNormReluPool(x: TensorInfo, params: BatchNormParams, epsilon: number,
    factors: TensorInfo, out: PooledWithCodes, g: ConvGeometry): void {
    this.exports.batch_norm_relu_pool(this.ptr(x), this.ptr(params.mean), this.ptr(params.variance), this.ptr(params.offset), this.ptr(params.scale), epsilon,
      this.ptr(factors), this.ptr(out.pooled), this.ptr(out.codes), this.geometry(g));
  }

  /**
   * mean and variance [channels] <- the column means of x[rows, channels] and of its squared deviations, in one pass
   * over memory (native/batch_norm.c); channels in fours, stats scratch of 4·channels floats.
   */
  momentsRows(x: TensorInfo, mean: TensorInfo, variance: TensorInfo, stats: TensorInfo, rows: number, channels: number): void {
    this.exports.moments_rows(this.ptr(x), this.ptr(mean), this.ptr(variance), this.ptr(stats), rows, channels);
  }

  /** out[channels] <- column means of (x[rows, channels] - mean)²: the biased batch variance. */
  varianceRows(x: TensorInfo, mean: TensorInfo, out: TensorInfo, rows: number, channels: number): void {
    this.exports.variance_rows(this.ptr(x), this.ptr(mean), this.ptr(out), rows, channels);
  }

  /**
   * Training-mode batch norm's gradient with the batch's own mean and variance (native/batch_norm.c), through a ReLU
   * on its output with relu: overwrites dx [rows, C], dScale and dOffset [C]. rows >= 4.
   */
  batchNormTrainGrad(x: TensorInfo, dy: TensorInfo, params: BatchNormParams, epsilon: number, relu: boolean,
    out: { dx: TensorInfo; dScale: TensorInfo; dOffset: TensorInfo }, rows: number, channels: number): void {
    this.exports.batch_norm_train_grad(this.ptr(x), this.ptr(dy), this.ptr(params.mean), this.ptr(params.variance), this.ptr(params.scale), this.ptr(params.offset),
      epsilon, relu ? 1 : 0, this.ptr(out.dx), this.ptr(out.dScale), this.ptr(out.dOffset), rows, channels);
  }

  /**
   * batchNormTrainGrad of BatchNormalization → ReLU → 2×2 max pool (batchNormReluPool's) from the pooled gradient dy,
   * the pooled output and its codes: each pair of image rows of the gradient in front of the pool is unpooled into
   * scratch (2·W·C floats) as it is used. `g` describes the pool; C a multiple of 4.
   */
  batchNormPoolGrad(x: TensorInfo, dy: TensorInfo, pool: PooledWithCodes, params: BatchNormParams,
    epsilon: number, scratch: TensorInfo, out: { dx: TensorInfo; dScale: TensorInfo; dOffset: TensorInfo }, g: ConvGeometry): void {
    this.exports.batch_norm_pool_grad(this.ptr(x), this.ptr(dy), ...this.pool(pool), this.ptr(params.mean), this.ptr(params.variance), this.ptr(params.scale),
      this.ptr(params.offset), epsilon, this.ptr(scratch), this.ptr(out.dx), this.ptr(out.dScale), this.ptr(out.dOffset), this.geometry(g));
  }

  /**
   * out[rows, channels] <- x op v with v[channels] broadcast over the rows (or v[1] over everything when channels is
   * 1). `out` must be a fresh output: tensors may share memory (the Identity and Cast fast paths), so writing into an
   * input would change its clones too.
   */
  channelOp(x: TensorInfo, v: TensorInfo, out: TensorInfo, rows: number, channels: number, op: ChannelOp): void {
    this.exports.channel_op(this.ptr(x), this.ptr(v), this.ptr(out), rows, channels, op);
  }

  /** out[cols, rows] <- a[rows, cols]; `a` may be a view of any tensor of rows·cols elements. */
  transpose2d(a: TensorInfo, out: TensorInfo, rows: number, cols: number): void {
    this.exports.transpose_2d(this.ptr(a), this.ptr(out), rows, cols);
  }

  /** c[M, N] <- a[M, K] · b[K, N], or aᵀ · b with a stored as [K, M] when aTransposed; row-major; overwrites c. */
  gemm(a: TensorInfo, b: TensorInfo, c: TensorInfo, m: number, k: number, n: number, aTransposed = false): void {
    this.exports.gemm_f32(this.ptr(a), this.ptr(b), this.ptr(c), m, k, n, aTransposed ? 1 : 0);
  }

  /** c[M, N] += bias[N] on every row (when given), then ReLU when relu; in place. */
  biasReluRows(c: TensorInfo, bias: TensorInfo | undefined, m: number, n: number, relu: boolean): void {
    this.exports.bias_relu_rows(this.ptr(c), bias ? this.ptr(bias) : 0, m, n, relu ? 1 : 0);
  }

  /** maxPoolGrad for 2×2 windows, stride 2, no padding, channels a multiple of 4; overwrites dx. */
  maxPoolGrad2x2(x: TensorInfo, dy: TensorInfo, dx: TensorInfo, g: ConvGeometry): void {
    this.exports.max_pool_grad_2x2(this.ptr(x), this.ptr(dy), this.ptr(dx), g.inC, this.geometry(g));
  }

  /** The 2×2, stride-2 max pool of z and its codes (pool-codes.ts); `g` describes the pool, channels in fours. */
  maxPool2x2Codes(z: TensorInfo, out: PooledWithCodes, g: ConvGeometry): void {
    this.exports.max_pool_2x2_codes(this.ptr(z), this.ptr(out.pooled), this.ptr(out.codes), g.inC, this.geometry(g));
  }

  /**
   * dz in front of a ReLU and a 2×2, stride-2 max pool, from the pooled gradient, the pooled output and its codes:
   * dy reaches the position its code names where pooled > 0. Overwrites dz; `g` describes the pool.
   */
  maxPoolGrad2x2Codes(dy: TensorInfo, pool: PooledWithCodes, dz: TensorInfo, g: ConvGeometry): void {
    this.exports.max_pool_grad_2x2_codes(this.ptr(dy), this.ptr(pool.pooled), this.ptr(pool.codes), this.ptr(dz), g.inC, this.geometry(g));
  }

  /**
   * x conv w (+ bias[Cout]) (then ReLU) computed directly (few taps; Cout a multiple of 16), to `out`. Pooling needs
   * scratch of 2·OW·Cout floats; `moments` (with out.y: y's mean and biased variance per channel, folded row by row as
   * it is written) needs scratch of 4·Cout floats.
   */
  convDirect(
    x: TensorInfo, w: TensorInfo, bias: TensorInfo | undefined, relu: boolean, out: ConvOutput, g: ConvGeometry, scratch?: TensorInfo,
    moments?: BatchMoments,
  ): void {
    if (!('y' in out) && !scratch) throw new Error('mnist-ddp wasm kernels: conv_direct pools through scratch of 2·OW·Cout floats');
    if (moments && (!('y' in out) || !scratch)) throw new Error('mnist-ddp wasm kernels: conv_direct computes moments of an output it writes, in scratch of 4·Cout floats');
    this.exports.conv_direct(this.ptr(x), this.ptr(w), bias ? this.ptr(bias) : 0, ...this.outputs(out), moments ? this.ptr(moments.mean) : 0,
      moments ? this.ptr(moments.variance) : 0, scratch ? this.ptr(scratch) : 0, g.outC, epilogueFlags(bias, relu), this.geometry(g));
  }

  /** [y, pooled, codes] pointers of a ConvOutput (y: the staging scratch of a pooled one), 0 for those it lacks. */
  private outputs(out: ConvOutput): [number, number, number] {
    return 'y' in out ? [this.ptr(out.y), 0, 0] : [out.staged ? this.ptr(out.staged) : 0, this.ptr(out.pooled), this.ptr(out.codes)];
  }

  /**
   * y <- x · train/dropout.ts's mask for `samples` samples of `perSample` elements keyed from firstKey (a safe
   * integer); overwrites y.
   */
  dropout(x: TensorInfo, y: TensorInfo, samples: number, perSample: number, params: DropoutParams, firstKey: number): void {
    this.exports.dropout(this.ptr(x), this.ptr(y), samples, perSample, params.seedMix, firstKey >>> 0, Math.floor(firstKey / 2 ** 32), params.threshold, params.scale);
  }

  /** Floats of scratch the Winograd kernels need for a layer with these channel counts (native/winograd.c). */
  winogradScratchFloats(inC: number, outC: number): number {
    return this.exports.winograd_scratch_floats(inC, outC);
  }

  /**
   * x conv w (+ bias[Cout]) (then ReLU) by Winograd F(tile×tile, 3×3), tile 4 or 5, to `out` (pooling with 5-tiles
   * needs out.staged: B·2⌊OH/2⌋·2⌊OW/2⌋·Cout floats); with `moments` and out.y, also y's mean and biased variance per
   * channel, computed as it is written.
   */
  winogradConv(
    x: TensorInfo, w: TensorInfo, bias: TensorInfo | undefined, relu: boolean, out: ConvOutput, scratch: TensorInfo, tile: WinogradTile, g: ConvGeometry,
    moments?: BatchMoments,
  ): void {
    if (moments && !('y' in out)) throw new Error('mnist-ddp wasm kernels: winograd_conv computes moments only of an output it writes');
    if (!('y' in out) && tile === 5 && !out.staged) throw new Error('mnist-ddp wasm kernels: winograd_conv pools 5-tiles through staged scratch');
    this.exports.winograd_conv(this.ptr(x), this.ptr(w), bias ? this.ptr(bias) : 0, ...this.outputs(out), moments ? this.ptr(moments.mean) : 0,
      moments ? this.ptr(moments.variance) : 0, this.ptr(scratch), g.outC, epilogueFlags(bias, relu), tile, this.geometry(g));
  }

  /**
   * That convolution's gradients in one sweep over its tiles (native/winograd.c winograd_conv_grad): out.dx [B, H, W,
   * Cin] from dy and the filter, out.dw [3, 3, Cin, Cout] from x and dy, each only when given; overwrites them. dy is
   * the gradient of the convolution's output, or of what follows it (WinogradGradSource). tile as winogradConv's.
   */
  winogradConvGrad(
    from: { filter?: TensorInfo; x?: TensorInfo }, dy: TensorInfo, out: { dx?: TensorInfo; dw?: TensorInfo }, source: WinogradGradSource, scratch: TensorInfo,
    tile: WinogradTile, g: ConvGeometry,
  ): void {
    if (!out.dx !== !from.filter || !out.dw !== !from.x) throw new Error('mnist-ddp wasm kernels: winograd_conv_grad needs the filter for dx and x for dW');
    const bn = source.batchNorm;
    const flags = winogradGradFlags(out.dx !== undefined, out.dw !== undefined, bn?.relu ?? false);
    this.exports.winograd_conv_grad(from.x ? this.ptr(from.x) : 0, this.ptr(dy), ...this.pool(source.pool), bn ? this.ptr(bn.z) : 0, bn ? this.ptr(bn.coef) : 0,
      from.filter ? this.ptr(from.filter) : 0,
      out.dx ? this.ptr(out.dx) : 0, out.dw ? this.ptr(out.dw) : 0, this.ptr(scratch), g.outC, flags, tile, this.geometry(g));
  }

  /**
   * The first pass of batch norm's training gradient over x [B, H, W, C] (C in fours; `g` the pool's geometry of x,
   * native/batch_norm.c batch_norm_grad_params): out.dScale, out.dOffset, and out.coef (5·C floats) for a kernel that
   * computes dx block by block. With `pool`, dy is the pooled gradient (the ReLU is implied). Scratch: 4·C floats, plus
   * 2·W·C with `pool`.
   */
  batchNormGradParams(
    x: TensorInfo, dy: TensorInfo, pool: PooledWithCodes | undefined, params: BatchNormParams,
    epsilon: number, relu: boolean, scratch: TensorInfo, out: { dScale: TensorInfo; dOffset: TensorInfo; coef: TensorInfo }, g: ConvGeometry,
  ): void {
    this.exports.batch_norm_grad_params(this.ptr(x), this.ptr(dy), ...this.pool(pool), this.ptr(params.mean), this.ptr(params.variance), this.ptr(params.scale),
      this.ptr(params.offset), epsilon, relu ? 1 : 0, this.ptr(scratch), this.ptr(out.dScale), this.ptr(out.dOffset), this.ptr(out.coef), this.geometry(g));
  }

  /** [pooled, codes] pointers, 0 and 0 without a pool. */
  private pool(pool: PooledWithCodes | undefined): [number, number] {
    return pool ? [this.ptr(pool.pooled), this.ptr(pool.codes)] : [0, 0];
  }

  /**
   * Batch norm's gradient over the last axis of x[rows, C] (native/batch_norm.c): overwrites dx [rows, C] and the
   * per-channel dMean, dVariance, dScale, dOffset. rows ≥ 4 (dx holds the float64 sums until it is written).
   */
  batchNormGrad(
    x: TensorInfo, dy: TensorInfo, mean: TensorInfo, variance: TensorInfo, scale: TensorInfo | undefined, epsilon: number,
    out: { dx: TensorInfo; dMean: TensorInfo; dVariance: TensorInfo; dScale: TensorInfo; dOffset: TensorInfo }, rows: number, channels: number,
  ): void {
    this.exports.batch_norm_grad(this.ptr(x), this.ptr(dy), this.ptr(mean), this.ptr(variance), scale ? this.ptr(scale) : 0, epsilon,
      this.ptr(out.dx), this.ptr(out.dMean), this.ptr(out.dVariance), this.ptr(out.dScale), this.ptr(out.dOffset), rows, channels);
  }

  reluGrad(dy: TensorInfo, y: TensorInfo, out: TensorInfo, n: number): void {
    this.exports.relu_grad(this.ptr(dy), this.ptr(y), this.ptr(out), n);
  }
}

const instances = new WeakMap<WasmBackend, NativeKernels>();

export function nativeKernels(backend: WasmBackend): NativeKernels {
  let k = instances.get(backend);
  if (!k) {
    k = new NativeKernels(backend);
    instances.set(backend, k);
  }
  return k;
}
