import {
  backend_util, getKernel, type KernelConfig, type KernelFunc, type NamedAttrMap, type NamedTensorInfoMap, type TensorInfo,
} from '@tensorflow/tfjs';

/**
 * How Conv2DBackpropFilter runs on webgpu. `taps` (the default): the kernel below. `stock`: tfjs-backend-webgpu's
 * own, which gives each filter weight one GPU thread that loops over the whole batch (B·OH·OW products in series):
 * its time grows with the batch at a small, fixed parallelism (288 threads for `cnn`'s first layer). On the H200 the
 * Conv2D gradient by taps made `cnn` at B=1024 21× faster (bench/RESULTS.md). MNIST_DDP_WEBGPU_FILTER_GRAD=stock
 * keeps the stock kernel, for measuring one against the other.
 */
export function webgpuFilterGrad(): 'taps' | 'stock' {
  return process.env.MNIST_DDP_WEBGPU_FILTER_GRAD === 'stock' ? 'stock' : 'taps';
}

interface FilterGradAttrs {
  strides: number | [number, number];
  pad: 'valid' | 'same' | number | backend_util.ExplicitPadding;
  dataFormat?: 'NHWC' | 'NCHW';
  dimRoundingMode?: 'floor' | 'round' | 'ceil';
  filterShape: [number, number, number, number];
  dilations?: number | [number, number];
}

/**
 * Conv2DBackpropFilter (NHWC) built from `backendName`'s own kernels, parallel over the batch:
 *
 *   dW[kh, kw] = Σ_b  x_tap(kh, kw)[b]ᵀ · dy[b]      x_tap[b]: [OH·OW, Cin] (the inputs tap (kh, kw) reads),
 *                                                      dy[b]:    [OH·OW, Cout]
 *
 * One batched GEMM per tap ([B, Cin, OH·OW] · [B, OH·OW, Cout]: B·⌈Cin·Cout / tile⌉ workgroups on a GPU), then a sum
 * over the batch. A tap's inputs are a strided slice of the padded input, so no im2col buffer is built. The products
 * are the stock kernel's; only the order of the sums differs (float32 rounding). Like the stock kernels it reads the
 * top-left [OH, OW] window of a larger dy. Every intermediate is released before it returns.
 */
export function filterGradByTapsKernel(backendName: string, fallback?: KernelFunc): KernelConfig {
  const kernelFunc: KernelFunc = ({ inputs, backend, attrs }) => {
    const { x, dy } = inputs as { x: TensorInfo; dy: TensorInfo };
    const a = attrs as unknown as FilterGradAttrs;
    if (a.dataFormat === 'NCHW') {
      if (!fallback) throw new Error('Conv2DBackpropFilter by taps: NCHW is not supported');
      return fallback({ inputs, backend, attrs });
    }
    const info = backend_util.computeConv2DInfo(x.shape as [number, number, number, number], a.filterShape, a.strides, a.dilations ?? 1, a.pad, a.dimRoundingMode);
    const { batchSize: B, outHeight: OH, outWidth: OW, inChannels: cin, outChannels: cout } = info;
    const held: TensorInfo[] = [];
    const run = (name: string, kernelInputs: NamedTensorInfoMap | TensorInfo[], kernelAttrs: object): TensorInfo => {
      const kernel = getKernel(name, backendName);
      if (!kernel) throw new Error(`Conv2DBackpropFilter by taps: backend '${backendName}' has no ${name} kernel`);
      const out = kernel.kernelFunc({ inputs: kernelInputs as NamedTensorInfoMap, backend, attrs: kernelAttrs as NamedAttrMap }) as TensorInfo;
      held.push(out);
      return out;
    };
    const release = (keep?: TensorInfo): void => {
      for (const t of held) if (t !== keep) (backend as { disposeData(id: object): void }).disposeData(t.dataId);
    };
    try {
      const { top, bottom, left, right } = info.padInfo;
      const padded = top || bottom || left || right ? run('PadV2', { x }, { paddings: [[0, 0], [top, bottom], [left, right], [0, 0]], constantValue: 0 }) : x;
      const window = dy.shape[1] === OH && dy.shape[2] === OW ? dy : run('Slice', { x: dy }, { begin: [0, 0, 0, 0], size: [B, OH, OW, cout] });
      const g = run('Reshape', { x: window }, { shape: [B, OH * OW, cout] });
      const taps: TensorInfo[] = [];
      for (let kh = 0; kh < info.filterHeight; kh++) {
        for (let kw = 0; kw < info.filterWidth; kw++) {
          const h0 = kh * info.dilationHeight;
          const w0 = kw * info.dilationWidth;
          const tap = run('StridedSlice', { x: padded }, {
            begin: [0, h0, w0, 0], end: [B, h0 + (OH - 1) * info.strideHeight + 1, w0 + (OW - 1) * info.strideWidth + 1, cin],
            strides: [1, info.strideHeight, info.strideWidth, 1], beginMask: 0, endMask: 0, ellipsisMask: 0, newAxisMask: 0, shrinkAxisMask: 0,
          });
          const rows = run('Reshape', { x: tap }, { shape: [B, OH * OW, cin] });
          const perSample = run('BatchMatMul', { a: rows, b: g }, { transposeA: true, transposeB: false });
          taps.push(run('Sum', { x: perSample }, { axis: [0], keepDims: false }));
        }
      }
      const stacked = run('Pack', taps, { axis: 0 });
      const out = run('Reshape', { x: stacked }, { shape: a.filterShape });
      release(out);
      return out;
    } catch (err) {
      release();
      throw err;
    }
  };
  return { kernelName: 'Conv2DBackpropFilter', backendName, kernelFunc };
}
