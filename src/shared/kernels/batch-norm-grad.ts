import {
  engine, FusedBatchNorm, getBackend, reshape, util,
  type FusedBatchNormAttrs, type GradConfig, type KernelConfig, type NamedAttrMap, type NamedTensorInfoMap, type Tensor, type TensorInfo,
} from '@tensorflow/tfjs';
import { MIN_ROWS, perChannel, rowsOf } from './batch-norm.js';
import { assertWasmBackend } from './heap.js';
import { nativeKernels } from './native.js';
import { assertFloat32 } from './validate.js';

/**
 * Batch norm's gradient in two passes over memory (batch_norm_grad in native/batch_norm.c) where tfjs-core's
 * gradient of FusedBatchNorm runs about a dozen kernels, each a full pass (Sub, Mul, Tile, Sum, …) and as many
 * temporaries: every BatchNormalization layer of `cnn-large` runs it in training. One kernel returns all five
 * derivatives: dx, then dMean, dVariance, dScale and dOffset (one value per channel).
 */
const BATCH_NORM_GRAD_KERNEL = 'MnistDdpBatchNormGrad';

/** The calls the native gradient takes: float32, per-channel parameters, at least MIN_ROWS rows. */
function nativeApplies(x: TensorInfo, mean: TensorInfo, variance: TensorInfo, scale: TensorInfo | undefined): boolean {
  const { rows, channels } = rowsOf(x);
  return x.dtype === 'float32' && x.shape.length >= 2 && rows >= MIN_ROWS && perChannel(mean, channels) && perChannel(variance, channels) && perChannel(scale, channels);
}

export const batchNormGradKernelConfig: KernelConfig = {
  kernelName: BATCH_NORM_GRAD_KERNEL,
  backendName: 'wasm',
  kernelFunc: (({ inputs, backend, attrs }: { inputs: NamedTensorInfoMap; backend: unknown; attrs?: NamedAttrMap }) => {
    assertWasmBackend(backend);
    const { dy, x, mean, variance, scale } = inputs as { dy: TensorInfo; x: TensorInfo; mean: TensorInfo; variance: TensorInfo; scale?: TensorInfo };
    const { varianceEpsilon } = attrs as unknown as FusedBatchNormAttrs;
    assertFloat32('batchNormGrad', { dy, x, mean, variance, ...(scale ? { scale } : {}) });
    util.assertShapesMatch(dy.shape, x.shape, 'Error in batchNormGrad: dy and x must have the same shape.');
    util.assert(nativeApplies(x, mean, variance, scale) && typeof varianceEpsilon === 'number', () =>
      `Error in batchNormGrad: x [${x.shape.join(',')}] needs at least ${MIN_ROWS} rows and mean, variance and scale of one value per channel, ` +
      `got [${mean.shape.join(',')}], [${variance.shape.join(',')}], [${scale?.shape.join(',') ?? ''}].`);
    const { rows, channels } = rowsOf(x);
    const out = {
      dx: backend.makeOutput([...x.shape], 'float32'),
      dMean: backend.makeOutput([channels], 'float32'),
      dVariance: backend.makeOutput([channels], 'float32'),
      dScale: backend.makeOutput([channels], 'float32'),
      dOffset: backend.makeOutput([channels], 'float32'),
    };
    nativeKernels(backend).batchNormGrad(x, dy, mean, variance, scale, varianceEpsilon, out, rows, channels);
    return [out.dx, out.dMean, out.dVariance, out.dScale, out.dOffset];
  }) as unknown as KernelConfig['kernelFunc'],
};

/**
 * FusedBatchNorm's gradient: the native kernel on wasm for the calls it takes, else `stock` (tfjs-core's own
 * gradient, captured before this one replaces it) unchanged. The per-channel derivatives take the shape of mean, as
 * tfjs-core's do.
 */
export function batchNormGradConfig(stock: GradConfig): GradConfig {
  return {
    kernelName: FusedBatchNorm,
    inputsToSave: ['x', 'mean', 'variance', 'scale'],
    gradFunc: (dy: Tensor | Tensor[], saved: Tensor[], attrs: NamedAttrMap) => {
      const [x, mean, variance, scale] = saved as [Tensor, Tensor, Tensor, Tensor | undefined];
      if (getBackend() !== 'wasm' || !nativeApplies(x, mean, variance, scale)) return stock.gradFunc(dy, saved, attrs);
      // Computed here rather than in the first thunk: the engine runs each thunk in its own tidy, which would dispose
      // the other four outputs before their thunks run. Unused ones go with the backward pass's scope.
      const [dx, dMean, dVariance, dScale, dOffset] = engine().runKernel(
        BATCH_NORM_GRAD_KERNEL, { dy: dy as Tensor, x, mean, variance, ...(scale ? { scale } : {}) }, attrs,
      ) as Tensor[];
      return {
        x: () => dx!, mean: () => reshape(dMean!, mean.shape), variance: () => reshape(dVariance!, mean.shape),
        scale: () => reshape(dScale!, mean.shape), offset: () => reshape(dOffset!, mean.shape),
      };
    },
  };
}
