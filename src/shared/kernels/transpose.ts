import type { TensorInfo } from '@tensorflow/tfjs';
import type { WasmBackend } from './heap.js';
import { nativeKernels } from './native.js';

/**
 * out[C, R] <- a[R, C] with the cache-blocked transpose_2d of native/kernels.c (tfjs-backend-wasm's own Transpose
 * degrades badly on the large column matrices of im2col). `a` may be a view of any tensor of R·C elements.
 */
export function transpose2d(backend: WasmBackend, a: TensorInfo, rows: number, cols: number): TensorInfo {
  const out = backend.makeOutput([cols, rows], 'float32');
  nativeKernels(backend).transpose2d(a, out, rows, cols);
  return out;
}
