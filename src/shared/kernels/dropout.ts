import {
  customGrad, engine, util,
  type GradSaveFunc, type KernelConfig, type KernelFunc, type NamedAttrMap, type NamedTensorInfoMap, type Tensor, type TensorInfo,
} from '@tensorflow/tfjs';
import type { DropoutParams } from '../train/dropout.js';
import { assertWasmBackend } from './heap.js';
import { nativeKernels } from './native.js';
import { assertFloat32 } from './validate.js';

/**
 * Inverted dropout with train/dropout.ts's per-sample masks, drawn inside the kernel (native/dropout.c): one pass
 * over x, no mask tensor built in JavaScript and uploaded at every step (dropoutMask alone took 3.8 ms of a
 * `cnn-large` step in a CPU profile on 2 vCPUs: bench/RESULTS.md, 2026-12-05 04:40). The same kernel applied to dy is the gradient: dropout is linear in x.
 */
export const DROPOUT = 'MnistDdpDropout';

/** The masks' parameters and the first sample's key (Batch.sampleKey); x's first axis is the sample. */
export interface DropoutAttrs extends DropoutParams {
  firstKey: number;
}

type KernelArgs = { inputs: NamedTensorInfoMap; backend: unknown; attrs?: NamedAttrMap };

function dropoutKernel({ inputs, backend, attrs }: KernelArgs): TensorInfo {
  assertWasmBackend(backend);
  const { x } = inputs as { x: TensorInfo };
  const { threshold, scale, seedMix, firstKey } = attrs as unknown as DropoutAttrs;
  assertFloat32('dropout', { x });
  util.assert(x.shape.length >= 1, () => 'Error in dropout: x needs a sample axis.');
  util.assert(Number.isSafeInteger(firstKey) && firstKey >= 0, () => `Error in dropout: the first sample key must be a non-negative safe integer, got ${firstKey}.`);
  const samples = x.shape[0]!;
  const y = backend.makeOutput([...x.shape], 'float32');
  if (samples > 0) nativeKernels(backend).dropout(x, y, samples, util.sizeFromShape(x.shape) / samples, { threshold, scale, seedMix }, firstKey);
  return y;
}

export const dropoutKernelConfig: KernelConfig = { kernelName: DROPOUT, backendName: 'wasm', kernelFunc: dropoutKernel as unknown as KernelFunc };

/** x with dropout's mask applied, as one tape node whose gradient is the same mask applied to dy. Wasm only. */
export function dropoutOp(x: Tensor, attrs: DropoutAttrs): Tensor {
  const namedAttrs = attrs as unknown as NamedAttrMap;
  const op = customGrad((...args: Array<Tensor | GradSaveFunc>) => {
    const [input] = args as [Tensor];
    return {
      value: engine().runKernel(DROPOUT, { x: input }, namedAttrs) as Tensor,
      gradFunc: (dy: Tensor) => engine().runKernel(DROPOUT, { x: dy }, namedAttrs) as Tensor,
    };
  });
  return op(x) as Tensor;
}
