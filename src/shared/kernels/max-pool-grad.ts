import {
  backend_util, MaxPoolGrad,
  type KernelConfig, type MaxPoolGradAttrs, type NamedAttrMap, type NamedTensorInfoMap, type TensorInfo,
} from '@tensorflow/tfjs';
import { dyWindow } from './dy-window.js';
import { assertWasmBackend } from './heap.js';
import { geometryOf } from './geometry.js';
import { nativeKernels } from './native.js';
import { assertDyShape, assertFloat32, assertGeometry, assertRank } from './validate.js';

/** tfjs-core's name for this op in its error messages. */
const OP = 'maxPoolGrad';

/**
 * MaxPoolGrad: each output gradient goes to the first maximum of its window (the cpu backend's tie rule; ties are
 * common after ReLU). Replaces tfjs-backend-wasm's own kernel, which is much slower on `cnn`'s pooling layer; see
 * max_pool_grad in native/kernels.c. Checks its inputs as tfjs-core's maxPoolGrad op does, and dy's whole shape.
 */
function maxPoolGrad(args: { inputs: NamedTensorInfoMap; backend: unknown; attrs?: NamedAttrMap }): TensorInfo {
  const { backend } = args;
  assertWasmBackend(backend);
  const dy = args.inputs.dy!;
  const input = args.inputs.input!;
  const { filterSize, strides, pad, dimRoundingMode } = args.attrs as unknown as MaxPoolGradAttrs;
  assertFloat32(OP, { dy, input });
  assertRank(OP, 'dy', dy.shape, 4);
  assertRank(OP, 'input', input.shape, 4);
  const info = backend_util.computePool2DInfo(
    input.shape as [number, number, number, number], filterSize, strides, 1, pad, dimRoundingMode,
  );
  const g = geometryOf(info);
  assertGeometry(OP, g, pad, dimRoundingMode);
  assertDyShape(OP, dy, g, g.inC);
  const window = dyWindow(backend, dy, g, g.inC);
  const dx = backend.makeOutput([...input.shape], 'float32');
  nativeKernels(backend).maxPoolGrad(input, window.dy, dx, g);
  window.release();
  return dx;
}

export const maxPoolGradConfig: KernelConfig = {
  kernelName: MaxPoolGrad,
  backendName: 'wasm',
  kernelFunc: maxPoolGrad as KernelConfig['kernelFunc'],
};
