import {
  Conv2DBackpropFilter, Conv2DBackpropInput, customGrad, engine, FusedConv2D, util, zeros, zerosLike,
  type Conv2DAttrs, type Conv2DBackpropFilterAttrs, type Conv2DBackpropInputAttrs, type GradSaveFunc, type KernelConfig,
  type KernelFunc, type NamedAttrMap, type NamedTensorInfoMap, type Tensor, type Tensor1D, type Tensor4D,
  type TensorInfo,
} from '@tensorflow/tfjs';
import { convolveReluPool, useDirect } from './conv2d.js';
import { nhwcConvGeometry } from './geometry.js';
import { assertWasmBackend, withScratch } from './heap.js';
import { nativeKernels } from './native.js';
import { assertPooledWithCodes, codesApply, makePooledWithCodes, poolGeometry } from './pool-codes.js';
import { runWasmKernel } from './registered.js';
import { assertFloat32, assertGeometry, assertRank } from './validate.js';
import { winogradApplies, winogradGrads } from './winograd.js';

/**
 * A convolution with bias and ReLU followed by a 2×2, stride-2 max pool, as one op for training on wasm: the conv
 * blocks of `cnn` (both) and `lenet` (the second). tfjs-core runs such a block in training as Conv2D, Add, Relu and
 * MaxPool (it fuses bias and ReLU only when no gradient is recorded), and its gradient as MaxPoolGrad, ReluGrad, Sum,
 * then the convolution's own: each a full pass over the convolution's output, 5.5 MB on `cnn`'s conv1 at B=64.
 *
 * - Forward (CONV_RELU_POOL): the pooled output and the pool's codes (pool-codes.ts), which are all the gradient
 *   needs of the activation. Our convolution kernels pool each block of their output while it is in cache and never
 *   write the activation (conv2d.ts convolveReluPool); other layers run FusedConv2D, then pool it with codes.
 * - Backward (CONV_RELU_POOL_GRAD): the convolution's gradients read the pooled gradient through the codes, one block
 *   at a time in cache (Winograd's tiles, the direct filter gradient's row pairs), so the gradient in front of
 *   the ReLU (5.5 MB on `cnn`'s conv1) is never written either; the bias gradient is summed over the pooled gradient,
 *   a quarter of the elements (masked_sum_rows). Layers our kernels do not take get that gradient written once
 *   (max_pool_grad_2x2_codes) for Conv2DBackpropFilter and Conv2DBackpropInput.
 *
 * It is one tape node with one output (tf.customGrad): a kernel with a second output that the tape saw would get a
 * zero-filled gradient for it built in JavaScript at every step (tfjs-core's engine does so for every null dy), which
 * ate most of what the passes saved (bench/RESULTS.md, 2026-12-05); kernels run inside customGrad are not taped.
 * customGrad computes every input's gradient when the node is reached, so the caller says which it needs
 * (ConvReluPoolGrads). Same values as the unfused layers, up to the order of the bias gradient's additions
 * (test/unit/conv-relu-pool.test.ts).
 */
export const CONV_RELU_POOL = 'MnistDdpConvReluPool';
export const CONV_RELU_POOL_GRAD = 'MnistDdpConvReluPoolGrad';

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

/** The op takes 'valid' and 'same' (ConvReluPoolAttrs); explicit padding reaches the kernels only through runKernel. */
function assertPad(op: string, pad: unknown): void {
  util.assert(pad === 'valid' || pad === 'same', () => `Error in ${op}: pad must be 'valid' or 'same', got ${JSON.stringify(pad)}.`);
}

/** [pooled, codes] of relu(x ⋆ filter + bias) (pool-codes.ts). */
function convReluPoolForward({ inputs, backend, attrs }: KernelArgs): TensorInfo[] {
  assertWasmBackend(backend);
  const { x, filter, bias } = inputs as { x: TensorInfo; filter: TensorInfo; bias: TensorInfo };
  const { strides, pad } = attrs as unknown as ConvReluPoolAttrs;
  const convAttrs = { strides, pad, dataFormat: 'NHWC', dilations: 1, activation: 'relu' } as const;
  assertPad('convReluPool', pad);
  assertFloat32('convReluPool', { x, filter, bias });
  assertRank('convReluPool', 'x', x.shape, 4);
  assertRank('convReluPool', 'filter', filter.shape, 4);
  util.assert(codesApply(filter.shape[3]!), () => `Error in convReluPool: needs a multiple of 4 filters, got ${filter.shape[3]}.`);
  util.assert(bias.shape.length === 1 && bias.shape[0] === filter.shape[3], () =>
    `Error in convReluPool: bias must hold one value per filter (${filter.shape[3]}), got shape [${bias.shape.join(',')}].`);
  const fused = convolveReluPool(backend, x, filter, bias, convAttrs as unknown as Conv2DAttrs);
  if (fused) return [fused.pooled, fused.codes];
  const [activation] = runWasmKernel(backend, FusedConv2D, { x, filter, bias }, convAttrs) as [TensorInfo];
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

/** Which gradients CONV_RELU_POOL_GRAD returns (ConvReluPoolGrads), with the convolution's attributes. */
interface GradAttrs extends ConvReluPoolAttrs {
  inputGrad: boolean;
  filterGrad: boolean;
}

/**
 * [dx] if inputGrad, then [dFilter, dBias] if filterGrad, from the pooled gradient dy, x, the filter, and the pooled
 * output and codes of the forward pass. The convolution kernels that take the layer read dy through the codes block by
 * block (Winograd: each tile; the direct filter gradient of first layers: each pair of rows), so the gradient in
 * front of the pool is never written; other layers get it written once (max_pool_grad_2x2_codes) for the registered
 * Conv2DBackpropInput and Conv2DBackpropFilter. dBias is the pooled gradient summed where pooled > 0 (the windows
 * whose maximum passed the ReLU), a quarter of the elements (masked_sum_rows).
 */
function convReluPoolGrad({ inputs, backend, attrs }: KernelArgs): TensorInfo[] {
  assertWasmBackend(backend);
  const { dy, x, filter, pooled, codes } = inputs as { dy: TensorInfo; x: TensorInfo; filter: TensorInfo; pooled?: TensorInfo; codes?: TensorInfo };
  const { strides, pad, inputGrad, filterGrad } = attrs as unknown as GradAttrs;
  assertPad('convReluPoolGrad', pad);
  if (!pooled || !codes) throw new Error('Error in convReluPoolGrad: the gradient needs the pooled output and its codes.');
  assertFloat32('convReluPoolGrad', { dy, x, filter });
  assertRank('convReluPoolGrad', 'x', x.shape, 4);
  assertRank('convReluPoolGrad', 'filter', filter.shape, 4);
  util.assert(x.shape[3] === filter.shape[2], () => `Error in convReluPoolGrad: depth of input (${x.shape[3]}) must match input depth for filter ${filter.shape[2]}.`);
  const conv = { strides, pad, dataFormat: 'NHWC' as const, dimRoundingMode: undefined };
  const { g, taps } = nhwcConvGeometry(CONV_RELU_POOL_GRAD, x.shape as [number, number, number, number], filter.shape as [number, number, number, number], conv);
  const activationShape = [g.batch, g.outH, g.outW, g.outC];
  const pool = { pooled, codes };
  assertPooledWithCodes('convReluPoolGrad', activationShape, dy, pool);
  // Empty tensors take the registered kernels, which handle them.
  const ours = !activationShape.includes(0) && x.shape[3]! > 0;
  if (ours) assertGeometry('convReluPoolGrad', g, pad, undefined);
  const kernels = nativeKernels(backend);
  let dz: TensorInfo | undefined;
  const unpooled = (): TensorInfo => {
    if (!dz) {
      dz = backend.makeOutput(activationShape, 'float32');
      kernels.maxPoolGrad2x2Codes(dy, pool, dz, poolGeometry(activationShape));
    }
    return dz;
  };
  const run = (kernel: string, kernelInputs: NamedTensorInfoMap, kernelAttrs: object): TensorInfo => runWasmKernel(backend, kernel, kernelInputs, kernelAttrs)[0]!;
  const out: TensorInfo[] = [];
  try {
    const winograd = ours && winogradApplies(g)
      ? winogradGrads(backend, dy, g, { filter: inputGrad ? filter : undefined, x: filterGrad ? x : undefined }, { pool })
      : undefined;
    if (inputGrad) {
      out.push(winograd?.dx ?? run(Conv2DBackpropInput, { dy: unpooled(), filter }, { ...conv, inputShape: x.shape as [number, number, number, number] } satisfies Conv2DBackpropInputAttrs));
    }
    if (filterGrad) {
      if (winograd?.dw) {
        out.push({ ...winograd.dw, shape: [...filter.shape] });
      } else if (ours && useDirect(taps, g.outC)) {
        const dFilter = backend.makeOutput([...filter.shape], 'float32');
        out.push(dFilter);
        withScratch(backend, 2 * g.outW * g.outC, (scratch) => kernels.filterGradDirect(x, dy, dFilter, g, { ...pool, scratch }));
      } else {
        out.push(run(Conv2DBackpropFilter, { x, dy: unpooled() }, { ...conv, filterShape: filter.shape as [number, number, number, number] } satisfies Conv2DBackpropFilterAttrs));
      }
      const dBias = backend.makeOutput([g.outC], 'float32');
      out.push(dBias);
      // pooled > 0 exactly where dy reached an element > 0 of its window: the window's maximum is that element.
      kernels.maskedSumRows(dy, pooled, dBias, g.batch * Math.floor(g.outH / 2) * Math.floor(g.outW / 2), g.outC);
    }
  } catch (err) {
    for (const t of out) backend.disposeData(t.dataId);
    throw err;
  } finally {
    if (dz) backend.disposeData(dz.dataId);
  }
  return out;
}

export const convReluPoolGradKernelConfig: KernelConfig = {
  kernelName: CONV_RELU_POOL_GRAD, backendName: 'wasm', kernelFunc: convReluPoolGrad as unknown as KernelFunc,
};

/**
 * maxPool(relu(conv2d(x, filter) + bias)), 2×2 at stride 2, as one op (see the file comment). Only where
 * CONV_RELU_POOL and CONV_RELU_POOL_GRAD are registered: the wasm backend with mnist-ddp's training kernels
 * (register.ts).
 */
export function convReluPool(x: Tensor4D, filter: Tensor4D, bias: Tensor1D, attrs: ConvReluPoolAttrs, grads: ConvReluPoolGrads): Tensor4D {
  const { strides, pad } = attrs;
  util.assert(codesApply(filter.shape[3]) && bias.shape[0] === filter.shape[3], () =>
    `Error in convReluPool: needs a multiple of 4 filters and a bias of one value per filter, got filter [${filter.shape.join(',')}] and bias [${bias.shape.join(',')}].`);
  const forwardAttrs = { strides, pad } satisfies ConvReluPoolAttrs as unknown as NamedAttrMap;
  const gradAttrs = { strides, pad, inputGrad: grads.x, filterGrad: grads.weights } satisfies GradAttrs as unknown as NamedAttrMap;
  const op = customGrad((...args: Array<Tensor | GradSaveFunc>) => {
    const [x, filter, bias, save] = args as [Tensor4D, Tensor4D, Tensor1D, GradSaveFunc];
    const [pooled, codes] = engine().runKernel(CONV_RELU_POOL, { x, filter, bias }, forwardAttrs) as [Tensor4D, Tensor4D];
    save([x, filter, pooled, codes]);
    return {
      value: pooled,
      gradFunc: (dy: Tensor, saved: Tensor[]) => {
        const [sx, sFilter, sPooled, sCodes] = saved as [Tensor4D, Tensor4D, Tensor4D, Tensor4D];
        const out = grads.x || grads.weights
          ? engine().runKernel(CONV_RELU_POOL_GRAD, { dy, x: sx, filter: sFilter, pooled: sPooled, codes: sCodes }, gradAttrs) as Tensor[]
          : [];
        const dx = grads.x ? out.shift()! : zerosLike(sx);
        const [dFilter, dBias] = grads.weights ? out : [zerosLike(sFilter), zeros(bias.shape)];
        return [dx, dFilter!, dBias!];
      },
    };
  });
  return op(x, filter, bias) as Tensor4D;
}
