import { KERNELS_WASM_BASE64 } from './module.generated.js';

let compiled: WebAssembly.Module | undefined;

/**
 * native/kernels.c, compiled on first use and shared. It imports only `env.memory`, so each user instantiates it on
 * the memory it works in: tfjs-backend-wasm's heap (native.ts) or a ring's own arena (src/worker/ring/sum-arena.ts).
 */
export function kernelsModule(): WebAssembly.Module {
  compiled ??= new WebAssembly.Module(Buffer.from(KERNELS_WASM_BASE64, 'base64'));
  return compiled;
}
