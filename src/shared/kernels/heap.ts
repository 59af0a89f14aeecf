import { backend as activeBackend, getBackend, type Tensor, type TensorInfo } from '@tensorflow/tfjs';

/**
 * The slice of tfjs-backend-wasm internals our kernels use. tfjs-backend-wasm does not export these types for
 * kernel authors, so we name exactly what we touch and check the backend's shape on every kernel call
 * (`assertWasmBackend`).
 */
interface WasmModule {
  HEAPF32: Float32Array;
  HEAP32: Int32Array;
  cwrap(name: string, returnType: null | 'number', argTypes: Array<'number' | 'array'>): (...args: unknown[]) => unknown;
  /** Emscripten's instance exports: `memory` is the linear memory native.ts instantiates our kernels on. */
  asm?: { memory?: WebAssembly.Memory };
  _malloc?: (bytes: number) => number;
}

interface TensorEntry {
  /** The tensor id XNNPACK-backed C entry points take. */
  id: number;
  /** Byte offset of the tensor's data in wasm memory. */
  memoryOffset: number;
}

export interface WasmBackend {
  wasm: WasmModule;
  dataIdMap: { get(dataId: object): TensorEntry | undefined };
  makeOutput(shape: number[], dtype: 'float32' | 'int32'): TensorInfo;
  disposeData(dataId: object, force?: boolean): boolean;
  /** One more owner of the tensor's memory: it is freed when the last owner disposes it. */
  incRef(dataId: object): void;
}

export function assertWasmBackend(backend: unknown): asserts backend is WasmBackend {
  const b = backend as Partial<WasmBackend> | null;
  if (!b || typeof b.makeOutput !== 'function' || typeof b.incRef !== 'function' || !b.wasm || typeof b.wasm.cwrap !== 'function' || !b.dataIdMap) {
    throw new Error('mnist-ddp wasm kernels: the active backend does not look like tfjs-backend-wasm 4.x');
  }
}

export function entryOf(backend: WasmBackend, info: TensorInfo): TensorEntry {
  const entry = backend.dataIdMap.get(info.dataId);
  if (!entry) throw new Error('mnist-ddp wasm kernels: tensor is not on the wasm backend');
  return entry;
}

/**
 * A Float32Array view of a tensor's bytes in wasm memory. Views are invalidated when wasm memory grows, which any
 * allocation (makeOutput, XNNPACK operator creation) may do: take views after the last allocation of a phase.
 */
export function f32(backend: WasmBackend, info: TensorInfo): Float32Array {
  return new Float32Array(backend.wasm.HEAPF32.buffer, entryOf(backend, info).memoryOffset, sizeOf(info));
}

/** The same view of an int32 tensor (f32 says how long it is valid). */
export function i32(backend: WasmBackend, info: TensorInfo): Int32Array {
  return new Int32Array(backend.wasm.HEAP32.buffer, entryOf(backend, info).memoryOffset, sizeOf(info));
}

function sizeOf(info: TensorInfo): number {
  let size = 1;
  for (const d of info.shape) size *= d;
  return size;
}

/**
 * A float32 tensor's values as f32's view, on the active backend when it is wasm; undefined elsewhere (or for
 * another dtype). For code outside kernels that reads a tensor at once, without copying it out.
 */
export function wasmView(t: Tensor): Float32Array | undefined {
  if (getBackend() !== 'wasm' || t.dtype !== 'float32') return undefined;
  const backend = activeBackend();
  assertWasmBackend(backend);
  return f32(backend, t);
}

/** run(scratch) with `floats` float32s of scratch from the backend, freed afterwards whatever happens. */
export function withScratch<T>(backend: WasmBackend, floats: number, run: (scratch: TensorInfo) => T): T {
  const scratch = backend.makeOutput([floats], 'float32');
  try {
    return run(scratch);
  } finally {
    backend.disposeData(scratch.dataId);
  }
}
