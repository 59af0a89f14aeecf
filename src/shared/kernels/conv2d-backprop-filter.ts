import {
  Conv2DBackpropFilter,
  type Conv2DBackpropFilterAttrs, type KernelConfig, type NamedAttrMap, type NamedTensorInfoMap, type TensorInfo,
} from '@tensorflow/tfjs';
import { gemm } from './gemm.js';
import { assertWasmBackend } from './heap.js';
import { nhwcConvGeometry, type DilatedConvAttrs } from './geometry.js';
import { nativeKernels } from './native.js';
import { transpose2d } from './transpose.js';

/**
 * The direct kernel (first layers: few taps, KH·KW·Cin) and the gathered col(x)ᵀ (im2col_t) pay off only where their
 * SIMD loops cover the layer: 16 output channels at a time, 4 input channels at a time. Elsewhere they run scalar
 * loops and lose to im2col + a blocked transpose (B=64, p50 of 25, two runs each: `lenet` conv1 (25 taps, Cout 6)
 * direct 8.1–8.7 ms vs 7.0–7.6; `lenet` conv2 (Cin 6) im2col_t 2.9–4.5 ms vs 2.3–3.4; `cnn` conv1 (9 taps, Cout 32)
 * direct 1.14 ms vs 2.8; `cnn` conv2 (Cin 32) im2col_t 12.6 ms vs 14.2–14.3).
 */
const DIRECT_MAX_TAPS = 32;
const useDirect = (taps: number, outC: number): boolean => taps <= DIRECT_MAX_TAPS && outC % 16 === 0;
const gatherTransposed = (inC: number): boolean => inC % 4 === 0;

/**
 * dW[KH,KW,Cin,Cout] = col(x)ᵀ · dy with P = B·OH·OW rows, as one untransposed XNNPACK GEMM (see gemm.ts), except
 * for layers with few taps (Cin = 1), where a direct SIMD kernel avoids a GEMM of a poor shape (K = KH·KW).
 *
 * XNNPACK packs the right-hand operand of every new tensor: on the `cnn` second layer at B=64 that is 2.4 ms of a
 * 14 ms product when dy [7744, 64] is packed (13.97 vs 11.58 ms p50, same operands with and without a re-pack), and
 * packing col(x) [7744, 288] instead made the whole gradient 55 ms instead of 17 ms (p50 of 30). So the
 * orientation is chosen per call by which operand is cheaper to pack:
 *   - col(x) larger than dy (deep layers):  [Kc, P] · [P, Cout]  = dW directly; col(x)ᵀ is gathered directly when
 *     Cin is a multiple of 4, else built by im2col and a transpose.
 *   - dy larger than col(x) (few channels in, many out): [Cout, P] · [P, Kc] = dWᵀ, then a small transpose.
 */
function conv2dBackpropFilter(args: {
  inputs: NamedTensorInfoMap; backend: unknown; attrs?: NamedAttrMap;
}): TensorInfo {
  const { backend } = args;
  assertWasmBackend(backend);
  const x = args.inputs.x!;
  const dy = args.inputs.dy!;
  const attrs = args.attrs as unknown as Conv2DBackpropFilterAttrs & DilatedConvAttrs;
  const { filterShape } = attrs;
  const { g, p, taps } = nhwcConvGeometry(Conv2DBackpropFilter, x.shape as [number, number, number, number], filterShape, attrs);

  if (useDirect(taps, g.outC)) {
    const dw = backend.makeOutput([...filterShape], 'float32');
    nativeKernels(backend).filterGradDirect(x, dy, dw, g);
    return dw;
  }
  let dw: TensorInfo;
  if (taps >= g.outC) {
    let colT: TensorInfo;
    if (gatherTransposed(g.inC)) {
      colT = backend.makeOutput([taps, p], 'float32');
      nativeKernels(backend).im2colTransposed(x, colT, g);
    } else {
      const col = backend.makeOutput([p, taps], 'float32');
      nativeKernels(backend).im2col(x, col, g);
      colT = transpose2d(backend, col, p, taps);
      backend.disposeData(col.dataId);
    }
    dw = gemm(backend, colT, dy, taps, p, g.outC);
    backend.disposeData(colT.dataId);
  } else {
    const col = backend.makeOutput([p, taps], 'float32');
    nativeKernels(backend).im2col(x, col, g);
    const dyT = transpose2d(backend, dy, p, g.outC);
    const dwT = gemm(backend, dyT, col, g.outC, p, taps);
    backend.disposeData(col.dataId);
    backend.disposeData(dyT.dataId);
    dw = transpose2d(backend, dwT, g.outC, taps);
    backend.disposeData(dwT.dataId);
  }
  return { dataId: dw.dataId, shape: [...filterShape], dtype: 'float32' };
}

export const conv2dBackpropFilterConfig: KernelConfig = {
  kernelName: Conv2DBackpropFilter,
  backendName: 'wasm',
  kernelFunc: conv2dBackpropFilter as KernelConfig['kernelFunc'],
};
