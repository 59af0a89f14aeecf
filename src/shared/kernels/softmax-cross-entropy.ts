import {
  customGrad, engine, getBackend, getKernel, losses, oneHot, Reduction, util,
  type GradSaveFunc, type KernelConfig, type KernelFunc, type NamedAttrMap, type NamedTensorInfoMap, type Scalar, type Tensor,
  type Tensor1D, type Tensor2D, type TensorInfo,
} from '@tensorflow/tfjs';
import { assertWasmBackend, f32, i32, type WasmBackend } from './heap.js';
import { assertFloat32 } from './validate.js';

/**
 * The training loss, softmax cross-entropy summed over the batch, as one op on wasm: Σ_b (logsumexp(z_b) − z_b[y_b])
 * from logits z [B, K] and class indices y [B], with gradient dy · (softmax(z_b) − onehot(y_b)).
 *
 * tfjs computes it as OneHot, Cast, then about fifteen kernels forward (logSumExp's Max, Sub, Exp, Sum, Log, Add,
 * then Sub, Mul, Neg and two Sums) and as many backward, each an engine call with its tape bookkeeping; on `cnn` that
 * was about half of a step's kernel calls, for 640 numbers. The arithmetic is tfjs's, in the same order, each result
 * rounded to float32 as its kernel would store it. The sums' order of additions may differ, and so may exp and log by
 * an ulp: here they are Math.exp and Math.log rounded to float32, not the wasm backend's own.
 */
export const SOFTMAX_CROSS_ENTROPY = 'MnistDdpSoftmaxCrossEntropy';
export const SOFTMAX_CROSS_ENTROPY_GRAD = 'MnistDdpSoftmaxCrossEntropyGrad';

type KernelArgs = { inputs: NamedTensorInfoMap; backend: unknown };

/** Checks logits [B, K] float32 and labels [B] int32, every label in [0, K); returns B and K. */
function checkedSizes(op: string, backend: WasmBackend, logits: TensorInfo, labels: TensorInfo): { rows: number; classes: number } {
  assertFloat32(op, { logits });
  util.assert(logits.shape.length === 2, () => `Error in ${op}: logits must be [batch, classes], got [${logits.shape.join(',')}].`);
  const [rows, classes] = logits.shape as [number, number];
  util.assert(labels.dtype === 'int32' && labels.shape.length === 1 && labels.shape[0] === rows, () =>
    `Error in ${op}: labels must be int32 [${rows}], got ${labels.dtype} [${labels.shape.join(',')}].`);
  const y = i32(backend, labels);
  for (let b = 0; b < rows; b++) {
    const label = y[b]!;
    util.assert(label >= 0 && label < classes, () => `Error in ${op}: label ${label} of sample ${b} is outside [0, ${classes}).`);
  }
  return { rows, classes };
}

/** Row b's log-sum-exp as tfjs's logSumExp computes it: max + log(Σ exp(z − max)), each step rounded to float32. */
function logSumExp(z: Float32Array, at: number, classes: number): number {
  let max = z[at]!;
  for (let k = 1; k < classes; k++) if (z[at + k]! > max) max = z[at + k]!;
  let sum = 0;
  for (let k = 0; k < classes; k++) sum = Math.fround(sum + Math.fround(Math.exp(Math.fround(z[at + k]! - max))));
  return Math.fround(max + Math.fround(Math.log(sum)));
}

function forward({ inputs, backend }: KernelArgs): TensorInfo {
  assertWasmBackend(backend);
  const { logits, labels } = inputs as { logits: TensorInfo; labels: TensorInfo };
  const { rows, classes } = checkedSizes('softmaxCrossEntropy', backend, logits, labels);
  const loss = backend.makeOutput([], 'float32');
  const [z, y] = [f32(backend, logits), i32(backend, labels)];
  let total = 0;
  for (let b = 0; b < rows; b++) {
    const at = b * classes;
    total = Math.fround(total - Math.fround(z[at + y[b]!]! - logSumExp(z, at, classes)));
  }
  f32(backend, loss)[0] = total;
  return loss;
}

function gradient({ inputs, backend }: KernelArgs): TensorInfo {
  assertWasmBackend(backend);
  const { dy, logits, labels } = inputs as { dy: TensorInfo; logits: TensorInfo; labels: TensorInfo };
  assertFloat32('softmaxCrossEntropyGrad', { dy });
  util.assert(dy.shape.length === 0, () => `Error in softmaxCrossEntropyGrad: dy must be a scalar, got [${dy.shape.join(',')}].`);
  const { rows, classes } = checkedSizes('softmaxCrossEntropyGrad', backend, logits, labels);
  const dz = backend.makeOutput([rows, classes], 'float32');
  const [z, y, g, out] = [f32(backend, logits), i32(backend, labels), f32(backend, dy)[0]!, f32(backend, dz)];
  for (let b = 0; b < rows; b++) {
    const at = b * classes;
    const lse = logSumExp(z, at, classes);
    for (let k = 0; k < classes; k++) {
      const p = Math.fround(Math.exp(Math.fround(z[at + k]! - lse)));
      out[at + k] = Math.fround(g * Math.fround(p - (k === y[b] ? 1 : 0)));
    }
  }
  return dz;
}

export const softmaxCrossEntropyKernelConfigs: readonly KernelConfig[] = [
  { kernelName: SOFTMAX_CROSS_ENTROPY, backendName: 'wasm', kernelFunc: forward as unknown as KernelFunc },
  { kernelName: SOFTMAX_CROSS_ENTROPY_GRAD, backendName: 'wasm', kernelFunc: gradient as unknown as KernelFunc },
];

/**
 * Softmax cross-entropy of `logits` [B, K] against class indices `labels` [B] (int32), summed over the batch: one op
 * on the wasm backend with mnist-ddp's kernels registered (register.ts), else tfjs's
 * losses.softmaxCrossEntropy(oneHot(labels), logits, SUM). Only the logits get a gradient.
 */
export function softmaxCrossEntropySum(logits: Tensor2D, labels: Tensor1D): Scalar {
  if (getBackend() !== 'wasm' || getKernel(SOFTMAX_CROSS_ENTROPY, 'wasm') === undefined) {
    return losses.softmaxCrossEntropy(oneHot(labels, logits.shape[1]!), logits, undefined, undefined, Reduction.SUM) as Scalar;
  }
  const op = customGrad((...args: Array<Tensor | GradSaveFunc>) => {
    const [z, save] = args as [Tensor, GradSaveFunc];
    save([z]);
    return {
      value: engine().runKernel(SOFTMAX_CROSS_ENTROPY, { logits: z, labels }) as Scalar,
      gradFunc: (dy: Tensor, saved: Tensor[]) => engine().runKernel(SOFTMAX_CROSS_ENTROPY_GRAD, { dy, logits: saved[0]!, labels }) as Tensor,
    };
  });
  return op(logits) as Scalar;
}
