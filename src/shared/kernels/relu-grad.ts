import {
  cast, engine, getBackend, mul, Relu, step, util,
  type GradConfig, type KernelConfig, type NamedTensorInfoMap, type Tensor, type TensorInfo,
} from '@tensorflow/tfjs';
import { assertWasmBackend } from './heap.js';
import { nativeKernels } from './native.js';
import { assertFloat32 } from './validate.js';

/**
 * ReLU's gradient in one pass. tfjs-core computes dy · cast(step(x)) as three kernels and two temporaries, each a
 * full pass over memory; on wasm we run relu_grad from native/kernels.c instead.
 */
const RELU_GRAD_KERNEL = 'MnistDdpReluGrad';

export const reluGradKernelConfig: KernelConfig = {
  kernelName: RELU_GRAD_KERNEL,
  backendName: 'wasm',
  kernelFunc: (({ inputs, backend }: { inputs: NamedTensorInfoMap; backend: unknown }) => {
    assertWasmBackend(backend);
    const dy = inputs.dy!;
    const x = inputs.x!;
    assertFloat32('reluGrad', { dy, x });
    util.assertShapesMatch(dy.shape, x.shape, 'Error in reluGrad: dy and x must have the same shape.');
    const out = backend.makeOutput([...dy.shape], 'float32');
    nativeKernels(backend).reluGrad(dy, x, out, dy.shape.reduce((a, b) => a * b, 1));
    return out as TensorInfo;
  }) as unknown as KernelConfig['kernelFunc'],
};

export const reluGradConfig: GradConfig = {
  kernelName: Relu,
  inputsToSave: ['x'],
  gradFunc: (dy: Tensor | Tensor[], saved: Tensor[]) => {
    const [x] = saved as [Tensor];
    const g = dy as Tensor;
    if (getBackend() === 'wasm' && x.dtype === 'float32') {
      return { x: () => engine().runKernel(RELU_GRAD_KERNEL, { dy: g, x }) as Tensor };
    }
    return { x: () => mul(g, cast(step(x), 'float32')) };
  },
};
