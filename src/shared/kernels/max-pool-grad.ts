import {
  backend_util, MaxPoolGrad,
  type KernelConfig, type MaxPoolGradAttrs, type NamedAttrMap, type NamedTensorInfoMap, type TensorInfo,
} from '@tensorflow/tfjs';
import { assertWasmBackend } from './heap.js';
import { geometryOf } from './geometry.js';
import { nativeKernels } from './native.js';

/**
 * MaxPoolGrad: each output gradient goes to the first maximum of its window (the cpu backend's tie rule; ties are
 * common after ReLU). tfjs-backend-wasm's own kernel takes 47–55 ms per `cnn` step at B=64, ours 2–3.5 ms; see
 * max_pool_grad in native/kernels.c.
 */
function maxPoolGrad(args: { inputs: NamedTensorInfoMap; backend: unknown; attrs?: NamedAttrMap }): TensorInfo {
  const { backend } = args;
  assertWasmBackend(backend);
  const dy = args.inputs.dy!;
  const input = args.inputs.input!;
  const { filterSize, strides, pad, dimRoundingMode } = args.attrs as unknown as MaxPoolGradAttrs;
  const info = backend_util.computePool2DInfo(
    input.shape as [number, number, number, number], filterSize, strides, 1, pad, dimRoundingMode,
  );
  const dx = backend.makeOutput([...input.shape], 'float32');
  nativeKernels(backend).maxPoolGrad(input, dy, dx, geometryOf(info));
  return dx;
}

export const maxPoolGradConfig: KernelConfig = {
  kernelName: MaxPoolGrad,
  backendName: 'wasm',
  kernelFunc: maxPoolGrad as KernelConfig['kernelFunc'],
};
