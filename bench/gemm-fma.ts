/**
 * Per-layer GEMM microbenchmark (issue #17, part 2): XNNPACK's f32 GEMM as our kernels called it (src/shared/kernels/
 * gemm.ts called it before issue #17) against native/gemm.c `gemm_f32` built two ways with the same pinned clang: plain SIMD128, and
 * relaxed-SIMD (one f32x4.relaxed_madd per multiply-add). Shapes are the GEMMs of a `cnn` training step at B=64.
 *   npx tsx bench/gemm-fma.ts [--clang clang-16] [--reps 30] [--json]
 * Needs clang ≥ 16 (relaxed-SIMD builtins; Debian 12: apt-get install clang-16 lld-16). On Node 20 the relaxed build
 * is compiled after v8.setFlagsFromString('--experimental-wasm-relaxed-simd'); Node 24 validates it by default.
 * Reports median ms, GFLOP/s, the fraction of the FMA peak WebAssembly reaches here (measured by the same run:
 * fma_peak below) and the max relative error against a float64 product.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setFlagsFromString } from 'node:v8';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/shared/core/backend.js';
import { assertWasmBackend, entryOf, f32, type WasmBackend } from '../src/shared/kernels/heap.js';

const args = process.argv.slice(2);
const opt = (name: string, fallback: string): string => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] ?? fallback : fallback; };
const clang = opt('--clang', 'clang-16');
const reps = Number(opt('--reps', '30'));

/**
 * [name, M, K, N, calls]: who calls it in a `cnn` B=64 step, or would. The Winograd GEMMs are small and come 36 at a time (one
 * per transformed position, per block of 32 tiles): timed as 36 back-to-back calls on the same operands, which stay in
 * cache. A proxy: the kernel's 36 calls read 36 different planes (native/winograd.c), so inside a layer they run
 * somewhat slower than this.
 */
const SHAPES: Array<[string, number, number, number, number?]> = [
  ['conv2 Winograd forward, 36 × V[32,32]·U[32,64]', 32, 32, 64, 36],
  ['conv2 Winograd dx, 36 × Ŷ[32,64]·Uᵀ[64,32]', 32, 64, 32, 36],
  // The im2col route's GEMMs (layers Winograd does not take), at conv2's shape.
  ['im2col dx at conv2: dy[7744,64]·Wᵀ[64,288]', 7744, 64, 288],
  ['im2col dW at conv2: col(x)ᵀ[288,7744]·dy[7744,64]', 288, 7744, 64],
  ['fc1 dW: xᵀ[1600,64]·dy[64,128]', 1600, 64, 128],
  ['fc1 dx: dy[64,128]·Wᵀ[128,1600]', 64, 128, 1600],
  ['fc1 forward: x[64,1600]·W[1600,128]', 64, 1600, 128],
];

/*
 * The FMA peak as WebAssembly reaches it on this machine: 12 independent chains of f32x4 multiply-adds (more than
 * the 2 ports x 4 cycles of latency need, few enough for x64's 16 vector registers), nothing else in the loop. Bench-only
 * code, so it is compiled here rather than shipped in native/.
 */
const PEAK_C = `
#include <wasm_simd128.h>
#ifdef __wasm_relaxed_simd__
#define MADD(a, b, c) __builtin_wasm_relaxed_madd_f32x4((a), (b), (c))
#else
#define MADD(a, b, c) wasm_f32x4_add(wasm_f32x4_mul((a), (b)), (c))
#endif
__attribute__((export_name("fma_peak"))) float fma_peak(int n, float seed) {
  const v128_t m = wasm_f32x4_splat(0.999f), k = wasm_f32x4_splat(seed);
  v128_t a0 = k, a1 = k, a2 = k, a3 = k, a4 = k, a5 = k, a6 = k, a7 = k, a8 = k, a9 = k, a10 = k, a11 = k;
  for (int i = 0; i < n; i++) {
    a0 = MADD(a0, m, k), a1 = MADD(a1, m, k), a2 = MADD(a2, m, k), a3 = MADD(a3, m, k);
    a4 = MADD(a4, m, k), a5 = MADD(a5, m, k), a6 = MADD(a6, m, k), a7 = MADD(a7, m, k);
    a8 = MADD(a8, m, k), a9 = MADD(a9, m, k), a10 = MADD(a10, m, k), a11 = MADD(a11, m, k);
  }
  const v128_t s = wasm_f32x4_add(wasm_f32x4_add(wasm_f32x4_add(wasm_f32x4_add(a0, a1), wasm_f32x4_add(a2, a3)), wasm_f32x4_add(wasm_f32x4_add(a4, a5), wasm_f32x4_add(a6, a7))),
                                  wasm_f32x4_add(wasm_f32x4_add(a8, a9), wasm_f32x4_add(a10, a11)));
  return wasm_f32x4_extract_lane(s, 0);
}
`;

function buildPeak(relaxed: boolean, dir: string): Uint8Array<ArrayBuffer> {
  const src = join(dir, 'peak.c');
  writeFileSync(src, PEAK_C);
  const out = join(dir, 'peak.wasm');
  const r = spawnSync(clang, ['--target=wasm32', '-O3', '-msimd128', ...(relaxed ? ['-mrelaxed-simd'] : []), '-nostdlib', '-Wl,--no-entry', '-o', out, src], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${clang} failed: ${r.stderr || r.error?.message}`);
  return new Uint8Array(readFileSync(out));
}

/** GFLOP/s of fma_peak: 12 chains x 4 lanes x 2 flops per iteration, median of 9 runs of 2^24 iterations. */
function peakGflops(bytes: Uint8Array<ArrayBuffer>): number {
  const { fma_peak } = new WebAssembly.Instance(new WebAssembly.Module(bytes)).exports as { fma_peak(n: number, seed: number): number };
  const n = 1 << 24;
  fma_peak(1 << 20, 1);
  const times: number[] = [];
  for (let r = 0; r < 9; r++) {
    const t0 = performance.now();
    fma_peak(n, 1 + r);
    times.push(performance.now() - t0);
  }
  return (n * 12 * 4 * 2) / median(times) / 1e6;
}

function build(relaxed: boolean, dir: string): Uint8Array<ArrayBuffer> {
  const out = join(dir, relaxed ? 'relaxed.wasm' : 'plain.wasm');
  const nativeDir = fileURLToPath(new URL('../native/', import.meta.url));
  const sources = readdirSync(nativeDir).filter((f) => f.endsWith('.c')).sort().map((f) => join(nativeDir, f));
  const flags = ['--target=wasm32', '-O3', '-msimd128', ...(relaxed ? ['-mrelaxed-simd'] : []), '-mbulk-memory', '-nostdlib', '-ffreestanding',
    '-fno-ident', '-Wall', '-Werror', '-Wl,--no-entry', '-Wl,--import-memory', '-Wl,--strip-all', '-Wl,-z,stack-size=0', '-o', out, ...sources];
  const r = spawnSync(clang, flags, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${clang} failed: ${r.stderr || r.error?.message}`);
  return new Uint8Array(readFileSync(out));
}

/** XNNPACK's GEMM as src/shared/kernels/gemm.ts called it before gemm_f32: tfjs-backend-wasm's BatchMatMul, batch 1. */
function xnnpackGemm(backend: WasmBackend, a: tf.TensorInfo, b: tf.TensorInfo, m: number, k: number, n: number): tf.TensorInfo {
  const out = backend.makeOutput([m, n], 'float32');
  const shape = (dims: number[]): Uint8Array => new Uint8Array(new Int32Array(dims).buffer);
  const batchMatMul = backend.wasm.cwrap('BatchMatMul', null, ['number', 'array', 'number', 'number', 'array', 'number', 'number', 'number', 'number']);
  batchMatMul(entryOf(backend, a).id, shape([1, m, k]), 3, entryOf(backend, b).id, shape([1, k, n]), 3, 0, 0, entryOf(backend, out).id);
  return out;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'gemm-fma-'));
  const plainBytes = build(false, dir);
  const relaxedBytes = build(true, dir);
  const peakRelaxedBytes = buildPeak(true, dir);
  rmSync(dir, { recursive: true, force: true });
  if (!WebAssembly.validate(relaxedBytes)) setFlagsFromString('--experimental-wasm-relaxed-simd');
  const relaxedOk = WebAssembly.validate(relaxedBytes);
  // Only the FMA build has a throughput-bound peak this way (a mul + add chain is latency-bound).
  const peak: Record<string, number> = relaxedOk ? { 'relaxed FMA': peakGflops(peakRelaxedBytes) } : {};

  await initBackend('wasm');
  const backend = tf.backend();
  assertWasmBackend(backend);
  const memory = backend.wasm.asm!.memory!;
  type Gemm = (a: number, b: number, c: number, m: number, k: number, n: number, aTransposed: number) => void;
  const load = (bytes: Uint8Array<ArrayBuffer>): Gemm => (new WebAssembly.Instance(new WebAssembly.Module(bytes), { env: { memory } }).exports as { gemm_f32: Gemm }).gemm_f32;
  const variants: Array<[string, Gemm | undefined]> = [['plain SIMD', load(plainBytes)], ['relaxed FMA', relaxedOk ? load(relaxedBytes) : undefined]];

  const rows: Array<Record<string, unknown>> = [];
  for (const [name, m, k, n, calls = 1] of SHAPES) {
    const a = tf.randomNormal([m, k], 0, 1, 'float32', 1);
    const b = tf.randomNormal([k, n], 0, 1, 'float32', 2);
    const ai = { dataId: a.dataId, shape: a.shape, dtype: 'float32' as const };
    const bi = { dataId: b.dataId, shape: b.shape, dtype: 'float32' as const };
    // float64 reference, on a sample of 2 000 entries of C.
    const av = a.dataSync(), bv = b.dataSync();
    const sample = Array.from({ length: 2000 }, (_, s) => [(s * 7919) % m, (s * 104729) % n] as const);
    const ref = sample.map(([i, j]) => { let t = 0; for (let p = 0; p < k; p++) t += av[i * k + p]! * bv[p * n + j]!; return t; });
    const scale = Math.max(...ref.map(Math.abs));
    const check = (c: Float32Array): number => Math.max(...sample.map(([i, j], s) => Math.abs(c[i * n + j]! - ref[s]!))) / scale;

    const flop = 2 * m * k * n * calls;
    const row: Record<string, unknown> = { shape: name, m, k, n };
    // Times the product only (allocation of C included, as a kernel pays it); checks the first result.
    const timeIt = (label: string, run: () => tf.TensorInfo): void => {
      const times: number[] = [];
      let err = 0;
      for (let r = 0; r < reps + 3; r++) {
        const t0 = performance.now();
        const c = run();
        const dt = performance.now() - t0;
        if (r >= 3) times.push(dt);
        if (r === 0) err = check(f32(backend, c));
        backend.disposeData(c.dataId);
      }
      const ms = median(times);
      const gflops = flop / ms / 1e6;
      const ofPeak = peak[label] ? { ofPeak: +(gflops / peak[label]).toFixed(2) } : {};
      row[label] = { ms: +ms.toFixed(3), gflops: +gflops.toFixed(1), ...ofPeak, relErr: +err.toExponential(2) };
    };
    timeIt('XNNPACK', () => {
      for (let i = 1; i < calls; i++) backend.disposeData(xnnpackGemm(backend, ai, bi, m, k, n).dataId);
      return xnnpackGemm(backend, ai, bi, m, k, n);
    });
    for (const [label, fn] of variants) {
      if (!fn) { row[label] = 'relaxed SIMD not available'; continue; }
      timeIt(label, () => {
        const c = backend.makeOutput([m, n], 'float32');
        const [pa, pb, pc] = [entryOf(backend, ai).memoryOffset, entryOf(backend, bi).memoryOffset, entryOf(backend, c).memoryOffset];
        for (let i = 0; i < calls; i++) fn(pa, pb, pc, m, k, n, 0);
        return c;
      });
    }
    rows.push(row);
    a.dispose();
    b.dispose();
  }
  const peakGf = Object.fromEntries(Object.entries(peak).map(([k, v]) => [k, +v.toFixed(1)]));
  if (args.includes('--json')) console.log(JSON.stringify({ node: process.version, clang, reps, peakGflops: peakGf, rows }));
  else {
    console.log(JSON.stringify({ peakGflops: peakGf }));
    for (const r of rows) console.log(JSON.stringify(r));
  }
}

main().catch((err: unknown) => { console.error(err); process.exit(1); });
