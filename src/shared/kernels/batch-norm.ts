import { FusedBatchNorm, util, type FusedBatchNormAttrs, type KernelFunc, type NamedAttrMap, type NamedTensorInfoMap, type TensorInfo } from '@tensorflow/tfjs';
import { assertWasmBackend } from './heap.js';
import { nativeKernels } from './native.js';

type KernelArgs = { inputs: NamedTensorInfoMap; backend: unknown; attrs?: NamedAttrMap };

/**
 * Rows (elements per channel) the native gradients need: they keep their float64 sums in dx, 2C doubles in 4C floats,
 * until they overwrite it (native/batch_norm.c).
 */
export const MIN_ROWS = 4;

/** x[..., C] as rows of C channels: C is the last axis, rows the product of the others (0 when C is 0). */
export function rowsOf(x: TensorInfo): { rows: number; channels: number } {
  const channels = x.shape[x.shape.length - 1] ?? 0;
  return { rows: channels > 0 ? util.sizeFromShape(x.shape) / channels : 0, channels };
}

/** A batch-norm parameter of one value per channel: [C] or [1, …, 1, C]. */
export function perChannel(p: TensorInfo | undefined, channels: number): boolean {
  return p === undefined || (p.dtype === 'float32' && p.shape[p.shape.length - 1] === channels && util.sizeFromShape(p.shape) === channels);
}

/**
 * FusedBatchNorm of x[..., C] with per-channel mean, variance, offset and scale (what tfjs-layers' BatchNormalization
 * passes in training and inference): one native pass (batch_norm in native/batch_norm.c) with the factor
 * scale / sqrt(variance + ε) computed once per channel and block of rows. The stock kernel takes a square root and a
 * division per element: `npx tsx bench/batch-norm-kernels.ts --reps 30` (min) 6.0 → 0.84 ms on [64,28,28,32],
 * 2.8 → 0.34 ms on [64,14,14,64]; per `cnn-large` step (`bench --model cnn-large --backend wasm --profile
 * --steps 10`) 21.3 → 4.9 ms over 5 calls. Parameters of any other shape (the stock kernel cycles through each
 * parameter's values) go to the stock kernel.
 */
function batchNormFastPath(stock: KernelFunc): KernelFunc {
  return ((args: KernelArgs) => {
    const { x, mean, variance, offset, scale } = args.inputs as { x: TensorInfo; mean: TensorInfo; variance: TensorInfo; offset?: TensorInfo; scale?: TensorInfo };
    const { varianceEpsilon } = args.attrs as unknown as FusedBatchNormAttrs;
    const rank = x.shape.length;
    const size = util.sizeFromShape(x.shape);
    const channels = x.shape[rank - 1] ?? 0;
    const matches = x.dtype === 'float32' && rank >= 1 && size > 0 && typeof varianceEpsilon === 'number' &&
      [mean, variance].every((p) => p !== undefined && perChannel(p, channels)) && perChannel(offset, channels) && perChannel(scale, channels);
    if (!matches) return stock(args as never);
    const { backend } = args;
    assertWasmBackend(backend);
    const out = backend.makeOutput([...x.shape], 'float32');
    nativeKernels(backend).batchNorm(x, mean, variance, offset, scale, varianceEpsilon, out, size / channels, channels);
    return out;
  }) as KernelFunc;
}

export const BATCH_NORM_PATH = { kernelName: FusedBatchNorm, wrap: batchNormFastPath };
