import {
  Conv2D, Conv2DBackpropFilter, Conv2DBackpropInput, customGrad, engine, util, zerosLike,
  type Conv2DAttrs, type Conv2DBackpropFilterAttrs, type Conv2DBackpropInputAttrs, type GradSaveFunc, type KernelConfig,
  type KernelFunc, type NamedAttrMap, type NamedTensorInfoMap, type Tensor, type Tensor1D, type Tensor4D, type TensorInfo,
} from '@tensorflow/tfjs';
import { MIN_ROWS } from './batch-norm.js';
import { BATCH_NORM_TRAIN, BATCH_NORM_TRAIN_GRAD, normalizeTraining, type BatchNormTrainAttrs } from './batch-norm-train.js';
import { nhwcConvGeometry } from './geometry.js';
import { assertWasmBackend, withScratch, type WasmBackend } from './heap.js';
import { nativeKernels } from './native.js';
import { assertPooledWithCodes, poolGeometry, type PooledWithCodes } from './pool-codes.js';
import { runWasmKernel } from './registered.js';
import { assertFloat32, assertGeometry, assertRank } from './validate.js';
import { convolveWithMoments, useDirect } from './conv2d.js';
import { winogradApplies, winogradGrads } from './winograd.js';

/**
 * A convolution without bias followed by training-mode batch norm (then optionally a ReLU, then optionally a 2×2 max
 * pool), as one op for training on wasm: `cnn-large`'s conv → BatchNormalization → ReLU layers.
 *
 * - Forward (CONV_BATCH_NORM): the convolution's output z, kept for the gradient as the two ops would keep it, then
 *   batch norm of z. Where our convolution kernels take the layer (Winograd, or the direct kernel of first layers),
 *   the kernel folds its output into the batch moments as it writes it (per tile or per row: kernels.h fold_moments,
 *   conv2d.ts convolveWithMoments), so batch norm makes one pass over z instead of two; other layers run the
 *   registered Conv2D, then batch-norm-train.ts's kernel.
 * - Backward (CONV_BATCH_NORM_GRAD): batch norm's gradient has two passes, its sums and then dz = f (g - a - (z -
 *   mean) b) (native/batch_norm.c). Only the sums run as a pass (batch_norm_grad_params) where the convolution's
 *   gradient kernel can compute dz itself from dy and z as it reads them (kernels.h batch_norm_dx_run): Winograd's,
 *   tile by tile (winograd.c dy_source), dx and dW from one sweep; and the direct filter gradient of a first layer
 *   (no input gradient, no pool), row by row. dz, as large as z, is then never written or read back. Other layers
 *   get dz written by batch-norm-train.ts's gradient kernel, then the registered Conv2DBackpropInput and
 *   Conv2DBackpropFilter.
 *
 * One tape node with one output (tf.customGrad): see conv-relu-pool.ts for why. The moments equal the batch-norm
 * kernel's up to the order of their additions; given the same moments, the gradient is the two ops' bit for bit
 * (test/unit/conv-batch-norm.test.ts): dz is batch_norm_dx4's arithmetic (native/kernels.h), which block_dx also uses, and the convolution kernels are the same.
 */
export const CONV_BATCH_NORM = 'MnistDdpConvBatchNorm';
export const CONV_BATCH_NORM_GRAD = 'MnistDdpConvBatchNormGrad';

/** The convolution's attributes (undilated, NHWC) and batch norm's. */
export interface ConvBatchNormAttrs extends BatchNormTrainAttrs {
  strides: [number, number];
  pad: 'valid' | 'same';
}

/** Which gradients the tape needs besides batch norm's scale and offset (conv-relu-pool.ts ConvReluPoolGrads). */
export interface ConvBatchNormGrads {
  x: boolean;
  filter: boolean;
}

type GradAttrs = ConvBatchNormAttrs & { inputGrad: boolean; filterGrad: boolean };
type KernelArgs = { inputs: NamedTensorInfoMap; backend: unknown; attrs?: NamedAttrMap };

const convAttrsOf = (a: ConvBatchNormAttrs) => ({ strides: a.strides, pad: a.pad, dataFormat: 'NHWC' as const, dilations: [1, 1] as [number, number], dimRoundingMode: undefined });
const batchNormAttrsOf = (a: ConvBatchNormAttrs): BatchNormTrainAttrs => ({ varianceEpsilon: a.varianceEpsilon, relu: a.relu, pool: a.pool });

/** Checks the op's attributes, x, the filter and batch norm's [Cout] parameters; the convolution's geometry. */
function checked(op: string, x: TensorInfo, filter: TensorInfo, params: Record<string, TensorInfo>, a: ConvBatchNormAttrs) {
  util.assert(a.pad === 'valid' || a.pad === 'same', () => `Error in ${op}: pad must be 'valid' or 'same', got ${JSON.stringify(a.pad)}.`);
  util.assert(!a.pool || a.relu, () => `Error in ${op}: the pool comes after a ReLU.`);
  assertFloat32(op, { x, filter, ...params });
  assertRank(op, 'x', x.shape, 4);
  assertRank(op, 'filter', filter.shape, 4);
  util.assert(x.shape[3] === filter.shape[2], () => `Error in ${op}: depth of input (${x.shape[3]}) must match input depth for filter ${filter.shape[2]}.`);
  const { g } = nhwcConvGeometry(op, x.shape as [number, number, number, number], filter.shape as [number, number, number, number], convAttrsOf(a));
  for (const [name, p] of Object.entries(params)) {
    util.assert(p.shape.length === 1 && p.shape[0] === g.outC, () => `Error in ${op}: ${name} must have shape [${g.outC}], got [${p.shape.join(',')}].`);
  }
  return g;
}

/** [z, y, mean, variance], or with pool [z, pooled, codes, mean, variance]: z the convolution's output. */
function convBatchNormForward({ inputs, backend, attrs }: KernelArgs): TensorInfo[] {
  assertWasmBackend(backend);
  const { x, filter, scale, offset } = inputs as { x: TensorInfo; filter: TensorInfo; scale: TensorInfo; offset: TensorInfo };
  const a = attrs as unknown as ConvBatchNormAttrs;
  const g = checked('convBatchNorm', x, filter, { scale, offset }, a);
  const bn = batchNormAttrsOf(a);
  const ours = g.batch * g.outH * g.outW >= MIN_ROWS ? convolveWithMoments(backend, x, filter, convAttrsOf(a) as Conv2DAttrs) : undefined;
  if (ours) {
    try {
      return [ours.z, ...normalizeTraining(backend, ours.z, { ...ours, scale, offset }, bn), ours.mean, ours.variance];
    } catch (err) {
      for (const t of Object.values(ours)) backend.disposeData(t.dataId);
      throw err;
    }
  }
  // Layers our convolution kernels do not take: the registered Conv2D, then batch norm's kernel.
  const [conv] = runWasmKernel(backend, Conv2D, { x, filter }, convAttrsOf(a) satisfies Conv2DAttrs) as [TensorInfo];
  try {
    return [conv, ...runWasmKernel(backend, BATCH_NORM_TRAIN, { x: conv, scale, offset }, bn)];
  } catch (err) {
    backend.disposeData(conv.dataId);
    throw err;
  }
}

/**
 * [dx] if inputGrad, then [dFilter] if filterGrad, then [dScale, dOffset], from the op's gradient dy (pooled with
 * pool), x, the filter, the convolution's output z, batch norm's parameters and batch moments, and with pool the
 * pooled output and codes.
 */
function convBatchNormGrad({ inputs, backend, attrs }: KernelArgs): TensorInfo[] {
  assertWasmBackend(backend);
  const { dy, x, filter, z, scale, offset, mean, variance, pooled, codes } = inputs as Record<string, TensorInfo | undefined> as {
    dy: TensorInfo; x: TensorInfo; filter: TensorInfo; z: TensorInfo; scale: TensorInfo; offset: TensorInfo; mean: TensorInfo; variance: TensorInfo;
    pooled?: TensorInfo; codes?: TensorInfo;
  };
  const a = attrs as unknown as GradAttrs;
  const op = 'convBatchNormGrad';
  const g = checked(op, x, filter, { scale, offset, mean, variance }, a);
  assertFloat32(op, { dy, z });
  util.assertShapesMatch(z.shape, [g.batch, g.outH, g.outW, g.outC], `Error in ${op}: z must be the convolution's output.`);
  let pool: PooledWithCodes | undefined;
  if (a.pool) {
    if (!pooled || !codes) throw new Error(`Error in ${op}: pooling needs the pooled output and its codes.`);
    pool = { pooled, codes };
    assertPooledWithCodes(op, z.shape, dy, pool);
  } else {
    util.assertShapesMatch(dy.shape, z.shape, `Error in ${op}: dy and z must have the same shape.`);
  }
  const channels = g.outC;
  const nonEmpty = !z.shape.includes(0) && g.inC > 0;
  const winograd = nonEmpty && winogradApplies(g);
  // The direct filter gradient (first layers) computes dz row by row; it has no input gradient, nor a pooled form here.
  const direct = nonEmpty && !winograd && useDirect(g.kH * g.kW * g.inC, g.outC) && !a.inputGrad && !pool;
  if (!winograd && !direct) return unfusedGrad(backend, { dy, x, filter, z, scale, offset, mean, variance, ...pool }, a);
  assertGeometry(op, g, a.pad, undefined);
  const kernels = nativeKernels(backend);
  const dScale = backend.makeOutput([channels], 'float32');
  const dOffset = backend.makeOutput([channels], 'float32');
  try {
    const relu = a.relu && !pool;
    const sumsFloats = 4 * channels + (pool ? 2 * g.outW * channels : 0);
    // coef: 5·C floats, batch norm's per-channel coefficients for the gradient kernels' dz (batch_norm_grad_params).
    const { dx, dw } = withScratch(backend, 5 * channels, (coef) => {
      withScratch(backend, sumsFloats, (scratch) =>
        kernels.batchNormGradParams(z, dy, pool, { mean, variance, scale, offset }, a.varianceEpsilon, relu, scratch, { dScale, dOffset, coef }, poolGeometry(z.shape)));
      if (!a.inputGrad && !a.filterGrad) return {};
      if (winograd) return winogradGrads(backend, dy, g, { filter: a.inputGrad ? filter : undefined, x: a.filterGrad ? x : undefined }, { pool, batchNorm: { z, coef, relu } });
      const dFilter = backend.makeOutput([...filter.shape], 'float32');
      try {
        withScratch(backend, g.outW * channels, (rows) => kernels.filterGradDirect(x, dy, dFilter, g, undefined, { z, coef, relu, scratch: rows }));
      } catch (err) {
        backend.disposeData(dFilter.dataId);
        throw err;
      }
      return { dw: dFilter };
    });
    return [...(dx ? [dx] : []), ...(dw ? [{ ...dw, shape: [...filter.shape] }] : []), dScale, dOffset];
  } catch (err) {
    backend.disposeData(dScale.dataId);
    backend.disposeData(dOffset.dataId);
    throw err;
  }
}

/** Batch norm's gradient kernel writes dz, then the registered convolution gradients read it. */
function unfusedGrad(backend: WasmBackend, t: Record<string, TensorInfo>, a: GradAttrs): TensorInfo[] {
  const bnInputs = { dy: t.dy!, x: t.z!, mean: t.mean!, variance: t.variance!, scale: t.scale!, offset: t.offset!, ...(a.pool ? { pooled: t.pooled!, codes: t.codes! } : {}) };
  const [dz, dScale, dOffset] = runWasmKernel(backend, BATCH_NORM_TRAIN_GRAD, bnInputs, batchNormAttrsOf(a)) as [TensorInfo, TensorInfo, TensorInfo];
  const out: TensorInfo[] = [];
  try {
    const conv = convAttrsOf(a);
    if (a.inputGrad) out.push(...runWasmKernel(backend, Conv2DBackpropInput, { dy: dz, filter: t.filter! }, { ...conv, inputShape: t.x!.shape as [number, number, number, number] } satisfies Conv2DBackpropInputAttrs));
    if (a.filterGrad) out.push(...runWasmKernel(backend, Conv2DBackpropFilter, { x: t.x!, dy: dz }, { ...conv, filterShape: t.filter!.shape as [number, number, number, number] } satisfies Conv2DBackpropFilterAttrs));
  } catch (err) {
    for (const info of [...out, dScale, dOffset]) backend.disposeData(info.dataId);
    throw err;
  } finally {
    backend.disposeData(dz.dataId);
  }
  return [...out, dScale, dOffset];
}

export const convBatchNormKernelConfigs: readonly KernelConfig[] = [
  { kernelName: CONV_BATCH_NORM, backendName: 'wasm', kernelFunc: convBatchNormForward as unknown as KernelFunc },
  { kernelName: CONV_BATCH_NORM_GRAD, backendName: 'wasm', kernelFunc: convBatchNormGrad as unknown as KernelFunc },
];

/**
 * relu?(batchNorm(conv2d(x, filter))) (then a 2×2 max pool), batch norm on the batch's moments, as one op (see the file
 * comment); the moments go to `onMoments` (batch-norm-train.ts). Only where the kernels are registered: the wasm
 * backend with mnist-ddp's training kernels (register.ts).
 */
export function convBatchNorm(
  x: Tensor4D, filter: Tensor4D, scale: Tensor1D, offset: Tensor1D, attrs: ConvBatchNormAttrs, grads: ConvBatchNormGrads,
  onMoments: (mean: Tensor, variance: Tensor) => void,
): Tensor4D {
  const forwardAttrs = { ...attrs } satisfies ConvBatchNormAttrs as unknown as NamedAttrMap;
  const gradAttrs = { ...attrs, inputGrad: grads.x, filterGrad: grads.filter } satisfies GradAttrs as unknown as NamedAttrMap;
  const op = customGrad((...args: Array<Tensor | GradSaveFunc>) => {
    const [x, filter, scale, offset, save] = args as [Tensor4D, Tensor4D, Tensor1D, Tensor1D, GradSaveFunc];
    const outputs = engine().runKernel(CONV_BATCH_NORM, { x, filter, scale, offset }, forwardAttrs) as Tensor[];
    const z = outputs.shift()!;
    const [mean, variance] = outputs.slice(-2) as [Tensor, Tensor];
    // [y, …] or, with pool, [pooled, codes, …]: the op's value comes first.
    const [value, codes] = outputs as [Tensor4D, Tensor];
    onMoments(mean, variance);
    save([x, filter, z, scale, offset, mean, variance, ...(attrs.pool ? [value, codes] : [])]);
    return {
      value,
      gradFunc: (dy: Tensor, saved: Tensor[]) => {
        const [sx, sFilter, sz, sScale, sOffset, sMean, sVariance, sPooled, sCodes] = saved as Tensor[];
        const inputs = {
          dy, x: sx!, filter: sFilter!, z: sz!, scale: sScale!, offset: sOffset!, mean: sMean!, variance: sVariance!,
          ...(attrs.pool ? { pooled: sPooled!, codes: sCodes! } : {}),
        };
        const out = engine().runKernel(CONV_BATCH_NORM_GRAD, inputs, gradAttrs) as Tensor[];
        const dx = grads.x ? out.shift()! : zerosLike(sx!);
        const dFilter = grads.filter ? out.shift()! : zerosLike(sFilter!);
        return [dx, dFilter, out[0]!, out[1]!];
      },
    };
  });
  return op(x, filter, scale, offset) as Tensor4D;
}
