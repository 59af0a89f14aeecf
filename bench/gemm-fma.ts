/**
 * Per-layer GEMM microbenchmark (issue #17, part 2): XNNPACK's f32 GEMM as our kernels called it (src/shared/kernels/
 * gemm.ts called it before issue #17) against native/gemm.c `gemm_f32` built two ways with the same pinned clang: plain SIMD128, and
 * relaxed-SIMD (one f32x4.relaxed_madd per multiply-add). Shapes are the GEMMs of a `cnn` training step at B=64.
 *   npx tsx bench/gemm-fma.ts [--clang clang-16] [--reps 30] [--json]
 * Needs clang ≥ 16 (relaxed-SIMD builtins; Debian 12: apt-get install clang-16 lld-16). On Node 20 the relaxed build
 * is compiled after v8.setFlagsFromString('--experimental-wasm-relaxed-simd'); Node 24 validates it by default.
 * Reports median ms, GFLOP/s and the max relative error against a float64 product.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
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

/** [name, M, K, N]: who calls it in a `cnn` B=64 step. */
const SHAPES: Array<[string, number, number, number]> = [
  ['conv2 dx: dy[7744,64]·Wᵀ[64,288]', 7744, 64, 288],
  ['conv2 dW: col(x)ᵀ[288,7744]·dy[7744,64]', 288, 7744, 64],
  ['fc1 dW: xᵀ[1600,64]·dy[64,128]', 1600, 64, 128],
  ['fc1 dx: dy[64,128]·Wᵀ[128,1600]', 64, 128, 1600],
  ['fc1 forward: x[64,1600]·W[1600,128]', 64, 1600, 128],
];

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
  rmSync(dir, { recursive: true, force: true });
  if (!WebAssembly.validate(relaxedBytes)) setFlagsFromString('--experimental-wasm-relaxed-simd');
  const relaxedOk = WebAssembly.validate(relaxedBytes);

  await initBackend('wasm');
  const backend = tf.backend();
  assertWasmBackend(backend);
  const memory = backend.wasm.asm!.memory!;
  type Gemm = (a: number, b: number, c: number, m: number, k: number, n: number) => void;
  const load = (bytes: Uint8Array<ArrayBuffer>): Gemm => (new WebAssembly.Instance(new WebAssembly.Module(bytes), { env: { memory } }).exports as { gemm_f32: Gemm }).gemm_f32;
  const variants: Array<[string, Gemm | undefined]> = [['plain SIMD', load(plainBytes)], ['relaxed FMA', relaxedOk ? load(relaxedBytes) : undefined]];

  const rows: Array<Record<string, unknown>> = [];
  for (const [name, m, k, n] of SHAPES) {
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

    const flop = 2 * m * k * n;
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
      row[label] = { ms: +ms.toFixed(3), gflops: +(flop / ms / 1e6).toFixed(1), relErr: +err.toExponential(2) };
    };
    timeIt('XNNPACK', () => xnnpackGemm(backend, ai, bi, m, k, n));
    for (const [label, fn] of variants) {
      if (!fn) { row[label] = 'relaxed SIMD not available'; continue; }
      timeIt(label, () => {
        const c = backend.makeOutput([m, n], 'float32');
        fn(entryOf(backend, ai).memoryOffset, entryOf(backend, bi).memoryOffset, entryOf(backend, c).memoryOffset, m, k, n);
        return c;
      });
    }
    rows.push(row);
    a.dispose();
    b.dispose();
  }
  if (args.includes('--json')) console.log(JSON.stringify({ node: process.version, clang, reps, rows }));
  else for (const r of rows) console.log(JSON.stringify(r));
}

main().catch((err: unknown) => { console.error(err); process.exit(1); });
