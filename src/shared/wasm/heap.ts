import type { TensorInfo } from '@tensorflow/tfjs';

/**
 * The slice of tfjs-backend-wasm internals our kernels use. tfjs-backend-wasm does not export these types for
 * kernel authors, so we name exactly what we touch and check it once at registration (`assertWasmBackend`).
 */
export interface WasmModule {
  HEAPF32: Float32Array;
  HEAPU8: Uint8Array;
  cwrap(name: string, returnType: null | 'number', argTypes: Array<'number' | 'array'>): (...args: unknown[]) => unknown;
}

export interface WasmBackend {
  wasm: WasmModule;
  dataIdMap: { get(dataId: object): { id: number; memoryOffset: number } | undefined };
  makeOutput(shape: number[], dtype: 'float32'): TensorInfo;
  disposeData(dataId: object, force?: boolean): boolean;
}

export function assertWasmBackend(backend: unknown): asserts backend is WasmBackend {
  const b = backend as Partial<WasmBackend> | null;
  if (!b || typeof b.makeOutput !== 'function' || !b.wasm || typeof b.wasm.cwrap !== 'function' || !b.dataIdMap) {
    throw new Error('mnist-ddp wasm kernels: the active backend does not look like tfjs-backend-wasm 4.x');
  }
}

export function tensorId(backend: WasmBackend, info: TensorInfo): number {
  const entry = backend.dataIdMap.get(info.dataId);
  if (!entry) throw new Error('mnist-ddp wasm kernels: tensor is not on the wasm backend');
  return entry.id;
}

/**
 * A Float32Array view of a tensor's bytes in wasm memory. Views are invalidated when wasm memory grows, which any
 * allocation (makeOutput, XNNPACK operator creation) may do: take views after the last allocation of a phase.
 */
export function f32(backend: WasmBackend, info: TensorInfo): Float32Array {
  const entry = backend.dataIdMap.get(info.dataId);
  if (!entry) throw new Error('mnist-ddp wasm kernels: tensor is not on the wasm backend');
  let size = 1;
  for (const d of info.shape) size *= d;
  return new Float32Array(backend.wasm.HEAPF32.buffer, entry.memoryOffset, size);
}
