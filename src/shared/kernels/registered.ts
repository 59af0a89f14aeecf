import { getKernel, type NamedAttrMap, type NamedTensorInfoMap, type TensorInfo } from '@tensorflow/tfjs';
import type { WasmBackend } from './heap.js';

/**
 * Runs, from inside one of our kernels, the kernel registered on wasm under `name` (ours where we replace it, else
 * tfjs-backend-wasm's), on the same backend: the fused ops' route for layers their own kernels do not take. Its
 * outputs, as a list.
 */
export function runWasmKernel(backend: WasmBackend, name: string, inputs: NamedTensorInfoMap, attrs: object): TensorInfo[] {
  const kernel = getKernel(name, 'wasm');
  if (!kernel) throw new Error(`mnist-ddp wasm kernels: no ${name} kernel is registered on wasm`);
  const result = kernel.kernelFunc({ inputs, backend, attrs: attrs as unknown as NamedAttrMap });
  return Array.isArray(result) ? result : [result];
}
