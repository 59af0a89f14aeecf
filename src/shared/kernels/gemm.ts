import type { TensorInfo } from '@tensorflow/tfjs';
import { entryOf, type WasmBackend } from './heap.js';

/**
 * C[M,N] = A[M,K] · B[K,N] on XNNPACK's f32 GEMM microkernels.
 *
 * tfjs-backend-wasm's BatchMatMul reaches XNNPACK (`xnn_create_fully_connected_nc_f32`) only when neither operand is
 * transposed and the batch is 1; every other case falls to a naive triple loop, many times slower (e.g. on `cnn`'s
 * fc1 gradients). Our kernels therefore lay their operands out so that every product is a plain,
 * untransposed rank-2 GEMM and call the exported C entry point directly. B is treated as XNNPACK "weights": it is
 * packed on each call (the operator is cached on B's tensor id and freed when B is disposed), which costs O(K·N)
 * against the O(M·K·N) product.
 */
type BatchMatMulFn = (
  aId: number, aShape: Uint8Array, aRank: number, bId: number, bShape: Uint8Array, bRank: number,
  transposeA: number, transposeB: number, outId: number,
) => void;

const bound = new WeakMap<WasmBackend, BatchMatMulFn>();

function batchMatMulFn(backend: WasmBackend): BatchMatMulFn {
  let fn = bound.get(backend);
  if (!fn) {
    fn = backend.wasm.cwrap('BatchMatMul', null, [
      'number', 'array', 'number', 'number', 'array', 'number', 'number', 'number', 'number',
    ]) as BatchMatMulFn;
    bound.set(backend, fn);
  }
  return fn;
}

function shapeBytes(dims: number[]): Uint8Array {
  return new Uint8Array(new Int32Array(dims).buffer);
}

/** Returns a new [M,N] tensor; the caller owns it. `a` and `b` only need M·K and K·N elements in row-major order. */
export function gemm(backend: WasmBackend, a: TensorInfo, b: TensorInfo, m: number, k: number, n: number): TensorInfo {
  const out = backend.makeOutput([m, n], 'float32');
  batchMatMulFn(backend)(
    entryOf(backend, a).id, shapeBytes([1, m, k]), 3, entryOf(backend, b).id, shapeBytes([1, k, n]), 3, 0, 0,
    entryOf(backend, out).id,
  );
  return out;
}
