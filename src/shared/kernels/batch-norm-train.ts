import {
  customGrad, engine, util,
  type GradSaveFunc, type KernelConfig, type KernelFunc, type NamedAttrMap, type NamedTensorInfoMap, type Tensor, type TensorInfo,
} from '@tensorflow/tfjs';
import { MIN_ROWS, rowsOf } from './batch-norm.js';
import { assertWasmBackend, withScratch, type WasmBackend } from './heap.js';
import { nativeKernels, type BatchNormParams } from './native.js';
import { assertPooledWithCodes, codesApply, makePooledWithCodes, poolGeometry, type PooledWithCodes } from './pool-codes.js';
import { assertFloat32 } from './validate.js';

/**
 * Training-mode batch normalisation over the last axis, optionally followed by a ReLU and then a 2×2 max pool, as one
 * op on wasm: a BatchNormalization (→ ReLU (→ pool)) that no convolution feeds (`cnn-large`'s, after its dense layer),
 * and the normalisation half of conv-batch-norm.ts, which shares normalizeTraining and these kernels where its own do
 * not apply.
 *
 * tfjs-layers computes it as moments (Mean, Sub, Square, Mean), FusedBatchNorm and Relu, and tfjs-core
 * differentiates each: the gradients through the batch mean and variance alone take about a dozen full passes and
 * their temporaries. Here:
 * - forward: the mean and the variance (the mean of squared deviations) in one pass over memory (channels in fours;
 *   else two), then the normalised output with the ReLU applied as it is written;
 * - backward: batch_norm_train_grad (native/batch_norm.c), the closed form of the whole gradient, ReLU included: two
 *   passes over x and dy (the ReLU's mask is recomputed from x, so the output is not kept).
 *
 * With pool (BatchNormalization → ReLU → 2×2, stride-2 MaxPooling2D, as at the end of both blocks of `cnn-large`), the
 * forward pass pools as it normalises (batch_norm_relu_pool) and keeps the pool's codes (pool-codes.ts) instead of
 * writing the normalised output; the gradient (batch_norm_pool_grad) unpools dy by code (where pooled > 0, which is also the
 * ReLU's mask) one pair of image rows at a time, in cache, as each pass reads them, so the gradient in front of the
 * pool is never written either. tfjs runs MaxPool and MaxPoolGrad over the full output.
 *
 * The batch's mean and variance go to `onMoments` during the forward pass, for the layer's moving averages. One
 * tape node with one output (tf.customGrad): see conv-relu-pool.ts for why not a kernel with several outputs.
 */
export const BATCH_NORM_TRAIN = 'MnistDdpBatchNormTrain';
export const BATCH_NORM_TRAIN_GRAD = 'MnistDdpBatchNormTrainGrad';

/** The batch-norm kernels' attributes. */
export interface BatchNormTrainAttrs {
  varianceEpsilon: number;
  relu: boolean;
  /** A 2×2, stride-2 max pool after the ReLU (relu must be on; x [B, H, W, C] with C a multiple of 4). */
  pool: boolean;
}

type KernelArgs = { inputs: NamedTensorInfoMap; backend: unknown; attrs?: NamedAttrMap };

/** x's rows and channels, after checking x (rank ≥ 2, at least MIN_ROWS rows) and that each parameter is [C]. */
function checkedRows(op: string, x: TensorInfo, params: Record<string, TensorInfo>): { rows: number; channels: number } {
  const { rows, channels } = rowsOf(x);
  util.assert(x.shape.length >= 2 && rows >= MIN_ROWS, () => `Error in ${op}: x [${x.shape.join(',')}] needs rank >= 2 and at least ${MIN_ROWS} rows per channel.`);
  for (const [name, p] of Object.entries(params)) {
    util.assert(p.shape.length === 1 && p.shape[0] === channels, () => `Error in ${op}: ${name} must have shape [${channels}], got [${p.shape.join(',')}].`);
  }
  return { rows, channels };
}

/** Checks the pool option: after a ReLU, over [B, H, W, C] with C in fours (the codes pack four channels). */
function assertPoolable(op: string, x: TensorInfo, { relu, pool }: BatchNormTrainAttrs): void {
  util.assert(!pool || (relu && x.shape.length === 4 && codesApply(x.shape[3]!)), () =>
    `Error in ${op}: pooling needs relu and x [B, H, W, C] with C a multiple of 4, got relu ${relu} and x [${x.shape.join(',')}].`);
}

/** [y, mean, variance], or with pool [pooled, codes, mean, variance]. */
function forward({ inputs, backend, attrs }: KernelArgs): TensorInfo[] {
  assertWasmBackend(backend);
  const { x, scale, offset } = inputs as { x: TensorInfo; scale: TensorInfo; offset: TensorInfo };
  const a = attrs as unknown as BatchNormTrainAttrs;
  assertFloat32('batchNormTrain', { x, scale, offset });
  const { rows, channels } = checkedRows('batchNormTrain', x, { scale, offset });
  assertPoolable('batchNormTrain', x, a);
  const mean = backend.makeOutput([channels], 'float32');
  const variance = backend.makeOutput([channels], 'float32');
  const kernels = nativeKernels(backend);
  if (channels % 4 !== 0) {
    kernels.meanRows(x, mean, rows, channels);
    kernels.varianceRows(x, mean, variance, rows, channels);
  } else {
    // Scratch for the moments' float64 sums (4C floats).
    withScratch(backend, 4 * channels, (scratch) => kernels.momentsRows(x, mean, variance, scratch, rows, channels));
  }
  return [...normalizeTraining(backend, x, { mean, variance, scale, offset }, a), mean, variance];
}

/**
 * [y] or, with pool, [pooled, codes]: x [..., C] normalised by the given batch moments (then the ReLU, then the pool,
 * as the op computes them; x, its parameters and the options checked by the caller).
 */
export function normalizeTraining(
  backend: WasmBackend, x: TensorInfo, p: BatchNormParams, a: BatchNormTrainAttrs,
): TensorInfo[] {
  const kernels = nativeKernels(backend);
  const { rows, channels } = rowsOf(x);
  if (a.pool) {
    const out = makePooledWithCodes(backend, x.shape);
    // Scratch for the per-channel factors (C floats).
    withScratch(backend, channels, (scratch) => kernels.batchNormReluPool(x, p, a.varianceEpsilon, scratch, out, poolGeometry(x.shape)));
    return [out.pooled, out.codes];
  }
  const y = backend.makeOutput([...x.shape], 'float32');
  kernels.batchNorm(x, p.mean, p.variance, p.offset, p.scale, a.varianceEpsilon, y, rows, channels, a.relu);
  return [y];
}

/**
 * [dx, dScale, dOffset]. With relu, the mask y > 0 is recomputed from x and the parameters (native/batch_norm.c);
 * with pool, dy is the pooled gradient, unpooled by the codes as it is read (inputs pooled and codes).
 */
function gradient({ inputs, backend, attrs }: KernelArgs): TensorInfo[] {
  assertWasmBackend(backend);
  const { dy, x, mean, variance, scale, offset, pooled, codes } =
    inputs as { dy: TensorInfo; x: TensorInfo; mean: TensorInfo; variance: TensorInfo; scale: TensorInfo; offset: TensorInfo; pooled?: TensorInfo; codes?: TensorInfo };
  const a = attrs as unknown as BatchNormTrainAttrs;
  assertFloat32('batchNormTrainGrad', { dy, x, mean, variance, scale, offset });
  const { rows, channels } = checkedRows('batchNormTrainGrad', x, { mean, variance, scale, offset });
  assertPoolable('batchNormTrainGrad', x, a);
  let pool: PooledWithCodes | undefined;
  if (a.pool) {
    if (!pooled || !codes) throw new Error('Error in batchNormTrainGrad: pooling needs the pooled output and its codes.');
    pool = { pooled, codes };
    assertPooledWithCodes('batchNormTrainGrad', x.shape, dy, pool);
  } else {
    util.assertShapesMatch(dy.shape, x.shape, 'Error in batchNormTrainGrad: dy and x must have the same shape.');
  }
  const kernels = nativeKernels(backend);
  const params = { mean, variance, scale, offset };
  const out = {
    dx: backend.makeOutput([...x.shape], 'float32'),
    dScale: backend.makeOutput([channels], 'float32'),
    dOffset: backend.makeOutput([channels], 'float32'),
  };
  try {
    if (pool) {
      const g = poolGeometry(x.shape);
      withScratch(backend, 2 * g.inW * channels, (scratch) => kernels.batchNormPoolGrad(x, dy, pool, params, a.varianceEpsilon, scratch, out, g));
    } else {
      kernels.batchNormTrainGrad(x, dy, params, a.varianceEpsilon, a.relu, out, rows, channels);
    }
  } catch (err) {
    for (const t of Object.values(out)) backend.disposeData(t.dataId);
    throw err;
  }
  return [out.dx, out.dScale, out.dOffset];
}

export const batchNormTrainKernelConfigs: readonly KernelConfig[] = [
  { kernelName: BATCH_NORM_TRAIN, backendName: 'wasm', kernelFunc: forward as unknown as KernelFunc },
  { kernelName: BATCH_NORM_TRAIN_GRAD, backendName: 'wasm', kernelFunc: gradient as unknown as KernelFunc },
];

/**
 * relu?((x - mean) · scale / sqrt(variance + epsilon) + offset) with the batch's mean and variance over every axis
 * but the last; scale and offset [C]. x needs at least MIN_ROWS rows per channel. Only where the kernels are
 * registered: the wasm backend with mnist-ddp's training kernels (register.ts).
 */
export function batchNormTraining(
  x: Tensor, scale: Tensor, offset: Tensor, options: { epsilon: number; relu: boolean; pool?: boolean },
  onMoments: (mean: Tensor, variance: Tensor) => void,
): Tensor {
  const attrs: BatchNormTrainAttrs = { varianceEpsilon: options.epsilon, relu: options.relu, pool: options.pool ?? false };
  const op = customGrad((...args: Array<Tensor | GradSaveFunc>) => {
    const [x, scale, offset, save] = args as [Tensor, Tensor, Tensor, GradSaveFunc];
    const outputs = engine().runKernel(BATCH_NORM_TRAIN, { x, scale, offset }, attrs as unknown as NamedAttrMap) as Tensor[];
    const [mean, variance] = outputs.slice(-2) as [Tensor, Tensor];
    // [y, …] or, with pool, [pooled, codes, …]: the op's value comes first.
    const [value, codes] = outputs as [Tensor, Tensor];
    onMoments(mean, variance);
    save(attrs.pool ? [x, scale, offset, mean, variance, value, codes] : [x, scale, offset, mean, variance]);
    return {
      value,
      gradFunc: (dy: Tensor, saved: Tensor[]) => {
        const [sx, sScale, sOffset, sMean, sVariance, sPooled, sCodes] = saved as [Tensor, Tensor, Tensor, Tensor, Tensor, Tensor?, Tensor?];
        const inputs = { dy, x: sx, mean: sMean, variance: sVariance, scale: sScale, offset: sOffset, ...(attrs.pool ? { pooled: sPooled!, codes: sCodes! } : {}) };
        return engine().runKernel(BATCH_NORM_TRAIN_GRAD, inputs, attrs as unknown as NamedAttrMap) as Tensor[];
      },
    };
  });
  return op(x, scale, offset);
}
