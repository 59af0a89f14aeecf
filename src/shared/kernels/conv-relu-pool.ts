import {
  backend_util, Conv2DBackpropFilter, Conv2DBackpropInput, customGrad, engine, FusedConv2D, getKernel, util, zerosLike,
  type Conv2DAttrs, type Conv2DBackpropFilterAttrs, type Conv2DBackpropInputAttrs, type GradSaveFunc, type KernelConfig,
  type KernelFunc, type NamedAttrMap, type NamedTensorInfoMap, type Tensor, type Tensor1D, type Tensor4D,
  type TensorInfo,
} from '@tensorflow/tfjs';
import { convolveReluPool } from './conv2d.js';
import { assertWasmBackend } from './heap.js';
import { nativeKernels } from './native.js';
import { assertPooledWithCodes, codesApply, makePooledWithCodes, poolGeometry } from './pool-codes.js';
import { assertFloat32, assertRank } from './validate.js';

/**
 * A convolution with bias and ReLU followed by a 2×2, stride-2 max pool, as one op for training on wasm: the conv
 * blocks of `cnn` (both) and `lenet` (the second). tfjs-core runs such a block in training as Conv2D, Add, Relu and
 * MaxPool (it fuses bias and ReLU only when no gradient is recorded), and its gradient as MaxPoolGrad, ReluGrad, Sum,
 * then the convolution's own: each a full pass over the convolution's output, 5.5 MB on `cnn`'s conv1 at B=64.
 *
 * - Forward (CONV_RELU_POOL): the pooled output and the pool's codes (pool-codes.ts), which are all the gradient
 *   needs of the activation. Our convolution kernels pool each block of their output while it is in cache and never
 *   write the activation (conv2d.ts convolveReluPool); other layers run FusedConv2D, then pool it with codes.
 * - Backward (RELU_POOL_GRAD): the gradient in front of the ReLU in one pass from the codes (max_pool_grad_2x2_codes),
 *   the bias gradient summed over the pooled gradient, a quarter of the elements (masked_sum_rows), then
 *   Conv2DBackpropFilter and Conv2DBackpropInput on it.
 *
 * It is one tape node with one output (tf.customGrad): a kernel with a second output that the tape saw would get a
 * zero-filled gradient for it built in JavaScript at every step (tfjs-core's engine does so for every null dy), which
 * ate most of what the passes saved (bench/RESULTS.md, 2026-12-05); kernels run inside customGrad are not taped.
 * customGrad computes every input's gradient when the node is reached, so the caller says which it needs
 * (ConvReluPoolGrads). Same values as the unfused layers, up to the order of the bias gradient's additions
 * (test/unit/conv-relu-pool.test.ts).
 */
export const CONV_RELU_POOL = 'MnistDdpConvReluPool';
export const RELU_POOL_GRAD = 'MnistDdpReluPoolGrad';

/** The convolution's attributes; the pool is always 2×2 at stride 2 without padding, the convolution undilated. */
export interface ConvReluPoolAttrs {
  strides: [number, number];
  pad: 'valid' | 'same';
}

/**
 * Which gradients the tape needs: an input whose gradient is off is a constant of the op (its gradient is zeros, as
 * under tf.stopGradient). A first layer's x (the images) needs none; a frozen layer's weights need none.
 */
export interface ConvReluPoolGrads {
  x: boolean;
  weights: boolean;
}

type KernelArgs = { inputs: NamedTensorInfoMap; backend: unknown; attrs?: NamedAttrMap };

/** [pooled, codes] of relu(x ⋆ filter + bias) (pool-codes.ts). */
function convReluPoolForward({ inputs, backend, attrs }: KernelArgs): TensorInfo[] {
  assertWasmBackend(backend);
  const { x, filter, bias } = inputs as { x: TensorInfo; filter: TensorInfo; bias: TensorInfo };
  const { strides, pad } = attrs as unknown as ConvReluPoolAttrs;
  const convAttrs = { strides, pad, dataFormat: 'NHWC', dilations: 1, activation: 'relu' } as const;
  assertFloat32('convReluPool', { x, filter, bias });
  assertRank('convReluPool', 'x', x.shape, 4);
  assertRank('convReluPool', 'filter', filter.shape, 4);
  util.assert(codesApply(filter.shape[3]!), () => `Error in convReluPool: needs a multiple of 4 filters, got ${filter.shape[3]}.`);
  util.assert(bias.shape.length === 1 && bias.shape[0] === filter.shape[3], () =>
    `Error in convReluPool: bias must hold one value per filter (${filter.shape[3]}), got shape [${bias.shape.join(',')}].`);
  const fused = convolveReluPool(backend, x, filter, bias, convAttrs as unknown as Conv2DAttrs);
  if (fused) return [fused.pooled, fused.codes];
  const activation = getKernel(FusedConv2D, 'wasm')!.kernelFunc({ inputs: { x, filter, bias }, backend, attrs: convAttrs as unknown as NamedAttrMap }) as TensorInfo;
  try {
    const out = makePooledWithCodes(backend, activation.shape);
    nativeKernels(backend).maxPool2x2Codes(activation, out, poolGeometry(activation.shape));
    return [out.pooled, out.codes];
  } finally {
    backend.disposeData(activation.dataId);
  }
}

export const convReluPoolKernelConfig: KernelConfig = {
  kernelName: CONV_RELU_POOL, backendName: 'wasm', kernelFunc: convReluPoolForward as unknown as KernelFunc,
};

/** The pool's input shape, which its output does not determine (odd sizes). */
interface ReluPoolGradAttrs {
  activationShape: number[];
}

/** [dz, dBias] from the pooled gradient, the pooled output and its codes: dz in front of the ReLU, dBias [C]. */
function reluPoolGrad({ inputs, backend, attrs }: KernelArgs): TensorInfo[] {
  assertWasmBackend(backend);
  const { dy, pooled, codes } = inputs as { dy: TensorInfo; pooled: TensorInfo; codes: TensorInfo };
  const { activationShape } = attrs as unknown as ReluPoolGradAttrs;
  assertPooledWithCodes('reluPoolGrad', activationShape, dy, { pooled, codes });
  const g = poolGeometry(activationShape);
  const dz = backend.makeOutput([...activationShape], 'float32');
  const dBias = backend.makeOutput([g.inC], 'float32');
  const kernels = nativeKernels(backend);
  kernels.maxPoolGrad2x2Codes(dy, { pooled, codes }, dz, g);
  // pooled > 0 exactly where dy reached an element > 0 of its window: the window's maximum is that element.
  kernels.maskedSumRows(dy, pooled, dBias, g.batch * g.outH * g.outW, g.inC);
  return [dz, dBias];
}

export const reluPoolGradKernelConfig: KernelConfig = {
  kernelName: RELU_POOL_GRAD, backendName: 'wasm', kernelFunc: reluPoolGrad as unknown as KernelFunc,
};

/**
 * maxPool(relu(conv2d(x, filter) + bias)), 2×2 at stride 2, as one op (see the file comment). Only where
 * CONV_RELU_POOL and RELU_POOL_GRAD are registered: the wasm backend with mnist-ddp's training kernels (register.ts).
 */
export function convReluPool(x: Tensor4D, filter: Tensor4D, bias: Tensor1D, attrs: ConvReluPoolAttrs, grads: ConvReluPoolGrads): Tensor4D {
  const { strides, pad } = attrs;
  util.assert(codesApply(filter.shape[3]) && bias.shape[0] === filter.shape[3], () =>
    `Error in convReluPool: needs a multiple of 4 filters and a bias of one value per filter, got filter [${filter.shape.join(',')}] and bias [${bias.shape.join(',')}].`);
  const forwardAttrs = { strides, pad } satisfies ConvReluPoolAttrs as unknown as NamedAttrMap;
  const activationShape = backend_util.computeConv2DInfo(x.shape, filter.shape, strides, 1, pad).outShape;
  const conv = { strides, pad, dataFormat: 'NHWC' as const, dimRoundingMode: undefined };
  const op = customGrad((...args: Array<Tensor | GradSaveFunc>) => {
    const [x, filter, bias, save] = args as [Tensor4D, Tensor4D, Tensor1D, GradSaveFunc];
    const [pooled, codes] = engine().runKernel(CONV_RELU_POOL, { x, filter, bias }, forwardAttrs) as [Tensor4D, Tensor4D];
    save([x, filter, bias, pooled, codes]);
    return {
      value: pooled,
      gradFunc: (dy: Tensor, saved: Tensor[]) => {
        const [sx, sFilter, sBias, sPooled, sCodes] = saved as [Tensor4D, Tensor4D, Tensor1D, Tensor4D, Tensor4D];
        const [dz, dBias] = engine().runKernel(RELU_POOL_GRAD, { dy, pooled: sPooled, codes: sCodes },
          { activationShape } satisfies ReluPoolGradAttrs as unknown as NamedAttrMap) as [Tensor4D, Tensor1D];
        const dx = grads.x
          ? engine().runKernel(Conv2DBackpropInput, { dy: dz, filter: sFilter }, { ...conv, inputShape: sx.shape } satisfies Conv2DBackpropInputAttrs as unknown as NamedAttrMap) as Tensor
          : zerosLike(sx);
        if (!grads.weights) return [dx, zerosLike(sFilter), zerosLike(sBias)];
        const dFilter = engine().runKernel(Conv2DBackpropFilter, { x: sx, dy: dz }, { ...conv, filterShape: sFilter.shape } satisfies Conv2DBackpropFilterAttrs as unknown as NamedAttrMap) as Tensor;
        return [dx, dFilter, dBias];
      },
    };
  });
  return op(x, filter, bias) as Tensor4D;
}
