import {
  customGrad, engine, util,
  type GradSaveFunc, type KernelConfig, type KernelFunc, type NamedAttrMap, type NamedTensorInfoMap, type Tensor, type TensorInfo,
} from '@tensorflow/tfjs';
import { assertWasmBackend } from './heap.js';
import { nativeKernels } from './native.js';
import { assertFloat32 } from './validate.js';

/**
 * Training-mode batch normalisation over the last axis, optionally followed by a ReLU, as one op on wasm: every
 * BatchNormalization → ReLU pair of `cnn-large` (four after convolutions, one after a dense layer).
 *
 * tfjs-layers computes it as moments (Mean, Sub, Square, Mean), FusedBatchNorm and Relu, and tfjs-core
 * differentiates each: the gradients through the batch mean and variance alone take about a dozen full passes and
 * their temporaries. Here:
 * - forward: the mean, the variance (the mean of squared deviations, summed in float64) and the normalised output
 *   with the ReLU applied as it is written: three passes;
 * - backward: batch_norm_train_grad (native/batch_norm.c), the closed form of the whole gradient, ReLU included: two
 *   passes over x and dy (the ReLU's mask is recomputed from x, so the output is not kept).
 *
 * The batch's mean and variance go to `onMoments` during the forward pass, for the layer's moving averages. One
 * tape node with one output (tf.customGrad): see conv-relu-pool.ts for why not a kernel with several outputs.
 */
const BATCH_NORM_TRAIN = 'MnistDdpBatchNormTrain';
export const BATCH_NORM_TRAIN_GRAD = 'MnistDdpBatchNormTrainGrad';

interface Attrs {
  varianceEpsilon: number;
  relu: boolean;
}

type KernelArgs = { inputs: NamedTensorInfoMap; backend: unknown; attrs?: NamedAttrMap };

/** Rows (elements per channel) the op needs: the gradient keeps its float64 sums in dx (native/batch_norm.c). */
export const MIN_ROWS = 4;

function rowsOf(op: string, x: TensorInfo, params: Record<string, TensorInfo>): { rows: number; channels: number } {
  const channels = x.shape[x.shape.length - 1] ?? 0;
  const rows = channels > 0 ? util.sizeFromShape(x.shape) / channels : 0;
  util.assert(x.shape.length >= 2 && rows >= MIN_ROWS, () => `Error in ${op}: x [${x.shape.join(',')}] needs rank >= 2 and at least ${MIN_ROWS} rows per channel.`);
  for (const [name, p] of Object.entries(params)) {
    util.assert(p.shape.length === 1 && p.shape[0] === channels, () => `Error in ${op}: ${name} must have shape [${channels}], got [${p.shape.join(',')}].`);
  }
  return { rows, channels };
}

/** [y, mean, variance]. */
function forward({ inputs, backend, attrs }: KernelArgs): TensorInfo[] {
  assertWasmBackend(backend);
  const { x, scale, offset } = inputs as { x: TensorInfo; scale: TensorInfo; offset: TensorInfo };
  const { varianceEpsilon, relu } = attrs as unknown as Attrs;
  assertFloat32('batchNormTrain', { x, scale, offset });
  const { rows, channels } = rowsOf('batchNormTrain', x, { scale, offset });
  const y = backend.makeOutput([...x.shape], 'float32');
  const mean = backend.makeOutput([channels], 'float32');
  const variance = backend.makeOutput([channels], 'float32');
  const kernels = nativeKernels(backend);
  kernels.meanRows(x, mean, rows, channels);
  kernels.varianceRows(x, mean, variance, rows, channels);
  kernels.batchNorm(x, mean, variance, offset, scale, varianceEpsilon, y, rows, channels, relu);
  return [y, mean, variance];
}

/** [dx, dScale, dOffset]. With relu, the mask y > 0 is recomputed from x and the parameters (native/batch_norm.c). */
function gradient({ inputs, backend, attrs }: KernelArgs): TensorInfo[] {
  assertWasmBackend(backend);
  const { dy, x, mean, variance, scale, offset } = inputs as { dy: TensorInfo; x: TensorInfo; mean: TensorInfo; variance: TensorInfo; scale: TensorInfo; offset: TensorInfo };
  const { varianceEpsilon, relu } = attrs as unknown as Attrs;
  assertFloat32('batchNormTrainGrad', { dy, x, mean, variance, scale, offset });
  util.assertShapesMatch(dy.shape, x.shape, 'Error in batchNormTrainGrad: dy and x must have the same shape.');
  const { rows, channels } = rowsOf('batchNormTrainGrad', x, { mean, variance, scale, offset });
  const out = {
    dx: backend.makeOutput([...x.shape], 'float32'),
    dScale: backend.makeOutput([channels], 'float32'),
    dOffset: backend.makeOutput([channels], 'float32'),
  };
  nativeKernels(backend).batchNormTrainGrad(x, dy, { mean, variance, scale, offset }, varianceEpsilon, relu, out, rows, channels);
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
  x: Tensor, scale: Tensor, offset: Tensor, options: { epsilon: number; relu: boolean },
  onMoments: (mean: Tensor, variance: Tensor) => void,
): Tensor {
  const attrs: Attrs = { varianceEpsilon: options.epsilon, relu: options.relu };
  const op = customGrad((...args: Array<Tensor | GradSaveFunc>) => {
    const [x, scale, offset, save] = args as [Tensor, Tensor, Tensor, GradSaveFunc];
    const [y, mean, variance] = engine().runKernel(BATCH_NORM_TRAIN, { x, scale, offset }, attrs as unknown as NamedAttrMap) as [Tensor, Tensor, Tensor];
    onMoments(mean, variance);
    save([x, scale, offset, mean, variance]);
    return {
      value: y,
      gradFunc: (dy: Tensor, saved: Tensor[]) => {
        const [sx, sScale, sOffset, sMean, sVariance] = saved as [Tensor, Tensor, Tensor, Tensor, Tensor];
        const inputs = { dy, x: sx, mean: sMean, variance: sVariance, scale: sScale, offset: sOffset };
        return engine().runKernel(BATCH_NORM_TRAIN_GRAD, inputs, attrs as unknown as NamedAttrMap) as Tensor[];
      },
    };
  });
  return op(x, scale, offset);
}
