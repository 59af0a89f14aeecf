import {
  backend_util, MaxPoolGrad,
  type KernelConfig, type MaxPoolGradAttrs, type NamedAttrMap, type NamedTensorInfoMap, type TensorInfo,
} from '@tensorflow/tfjs';
import { dyWindow } from './dy-window.js';
import { assertWasmBackend } from './heap.js';
import { geometryOf, type ConvGeometry } from './geometry.js';
import { nativeKernels } from './native.js';
import { assertDyShape, assertFloat32, assertGeometry, assertRank } from './validate.js';

/** tfjs-core's name for this op in its error messages. */
const OP = 'maxPoolGrad';

/**
 * 2×2 windows at stride 2 without padding (every zoo model's pools) and channels in fours: max_pool_grad_2x2
 * (native/pool.c) writes each dx element once instead of zeroing dx and scattering into it. See bench/RESULTS.md.
 */
const tilesWithoutOverlap = (g: ConvGeometry): boolean =>
  g.kH === 2 && g.kW === 2 && g.strideH === 2 && g.strideW === 2 && g.padTop === 0 && g.padLeft === 0 && g.inC % 4 === 0 &&
  g.outH === Math.floor(g.inH / 2) && g.outW === Math.floor(g.inW / 2);

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
  const kernels = nativeKernels(backend);
  if (tilesWithoutOverlap(g)) kernels.maxPoolGrad2x2(input, window.dy, dx, g);
  else kernels.maxPoolGrad(input, window.dy, dx, g);
  window.release();
  return dx;
}

export const maxPoolGradConfig: KernelConfig = {
  kernelName: MaxPoolGrad,
  backendName: 'wasm',
  kernelFunc: maxPoolGrad as KernelConfig['kernelFunc'],
};
