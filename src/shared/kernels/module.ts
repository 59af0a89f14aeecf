import { KERNELS_RELAXED_WASM_BASE64, KERNELS_WASM_BASE64 } from './module.generated.js';

let compiled: WebAssembly.Module | undefined;
let variant: 'relaxed-simd' | 'simd128' | undefined;

/**
 * Whether this runtime compiles relaxed SIMD. Node 24 does by default; Node 20 only with V8's
 * --experimental-wasm-relaxed-simd, which we turn on here (it only adds instructions) if it is not on already. In a
 * browser, or where the flag cannot be set, the answer is what WebAssembly.validate says.
 */
function relaxedSimdCompiles(bytes: Uint8Array<ArrayBuffer>): boolean {
  if (WebAssembly.validate(bytes)) return true;
  const v8 = typeof process === 'object' ? process.getBuiltinModule?.('node:v8') : undefined;
  if (!v8) return false;
  try {
    v8.setFlagsFromString('--experimental-wasm-relaxed-simd');
  } catch {
    return false;
  }
  return WebAssembly.validate(bytes);
}

/**
 * native/*.c, compiled on first use and shared: its relaxed-SIMD build (every MADD of native/kernels.h a fused
 * multiply-add, issue #17) where the runtime compiles it, else the SIMD128 build of the same code. It imports only `env.memory`,
 * so each user instantiates it on the memory it works in: tfjs-backend-wasm's heap (native.ts) or a ring's own arena
 * (src/worker/ring/sum-arena.ts).
 */
export function kernelsModule(): WebAssembly.Module {
  if (!compiled) {
    const relaxed = Uint8Array.from(Buffer.from(KERNELS_RELAXED_WASM_BASE64, 'base64'));
    variant = relaxedSimdCompiles(relaxed) ? 'relaxed-simd' : 'simd128';
    compiled = new WebAssembly.Module(variant === 'relaxed-simd' ? relaxed : Buffer.from(KERNELS_WASM_BASE64, 'base64'));
  }
  return compiled;
}

/** Which build kernelsModule() chose (compiling it if needed): for logs and benchmarks. */
export function kernelsVariant(): 'relaxed-simd' | 'simd128' {
  kernelsModule();
  return variant!;
}
