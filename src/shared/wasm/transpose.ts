import { getKernel, type TensorInfo } from '@tensorflow/tfjs';
import type { WasmBackend } from './heap.js';

/** out[C, R] ← a[R, C] with tfjs-backend-wasm's native Transpose kernel. `a` may be a view of any tensor of R·C elements. */
export function transpose2d(backend: WasmBackend, a: TensorInfo, rows: number, cols: number): TensorInfo {
  const kernel = getKernel('Transpose', 'wasm');
  if (!kernel) throw new Error('mnist-ddp wasm kernels: tfjs-backend-wasm has no Transpose kernel');
  const view: TensorInfo = { dataId: a.dataId, shape: [rows, cols], dtype: 'float32' };
  return kernel.kernelFunc({ inputs: { x: view }, backend: backend as never, attrs: { perm: [1, 0] } }) as TensorInfo;
}
