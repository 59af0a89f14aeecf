import type { TensorInfo } from '@tensorflow/tfjs';
import type { WasmBackend } from './heap.js';
import { nativeKernels } from './native.js';

/**
 * C[M,N] = A[M,K] · B[K,N] (or Aᵀ · B with A stored as [K, M]: aTransposed) with gemm_f32 of native/gemm.c:
 * register-blocked 4×8 tiles, fused multiply-adds where the runtime has relaxed SIMD (module.ts), no packing.
 *
 * It replaces XNNPACK's GEMM (tfjs-backend-wasm's BatchMatMul entry point, which packs B on every call) because it
 * was faster on every GEMM of a `cnn` training step, both builds, in bench/gemm-fma.ts (Node 20, 2 vCPU Zen 5, median
 * of 30; XNNPACK / SIMD128 / relaxed FMA, ms): conv2 dx 7744×64×288 11.2 / 10.0 / 7.4; conv2 dW 288×7744×64
 * 9.6 / 8.7 / 6.9; fc1 dW 1600×64×128 0.81 / 0.69 / 0.56; fc1 dx 64×128×1600 0.82 / 0.80 / 0.60. Our kernels lay
 * their operands out so that every product is this rank-2 GEMM; the transposed A is the form a dense layer's weight
 * gradient xᵀ · dy comes in.
 */
export function gemm(backend: WasmBackend, a: TensorInfo, b: TensorInfo, m: number, k: number, n: number, aTransposed = false): TensorInfo {
  const out = backend.makeOutput([m, n], 'float32');
  nativeKernels(backend).gemm(a, b, out, m, k, n, aTransposed);
  return out;
}
