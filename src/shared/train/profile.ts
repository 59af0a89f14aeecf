import * as tf from '@tensorflow/tfjs';
import type { BackendSelection } from '../core/backend.js';
import { roundTo } from '../core/stats.js';
import { CONV_BATCH_NORM, CONV_BATCH_NORM_GRAD } from '../kernels/conv-batch-norm.js';
import { CONV_RELU_POOL, CONV_RELU_POOL_GRAD } from '../kernels/conv-relu-pool.js';

/**
 * Where a step's time goes, kernel by kernel (issue #17, `bench --profile`): a few training steps run under
 * `tf.profile`, whose per-kernel times are summed by kernel name.
 *
 * What a kernel time means depends on the backend, hence `timed`:
 * - `wall`: wasm, cpu and tfjs-node on the CPU run each kernel synchronously, and their `time()` is the wall clock
 *   around it.
 * - `gpu-timestamps`: tfjs-backend-webgpu 4.22 times each kernel with a timestamp query around its compute pass, only
 *   when the device was created with the 'timestamp-query' feature (webgpu.ts asks for it when the adapter has it).
 *   Profiling then gives every kernel its own pass, submit and read-back, so the profiled step is slower than an
 *   unprofiled one; the kernel times themselves are the GPU's.
 * - `unavailable`: webgpu without timestamp queries (tfjs reports 0 for every kernel, not a measurement) and
 *   tfjs-node-gpu (its wall clock sees only the launch of an asynchronous CUDA kernel). Counts are still exact.
 */
export type KernelTiming = 'gpu-timestamps' | 'wall' | 'unavailable';

export interface KernelTotal {
  /** tfjs kernel name (`Conv2DBackpropFilter`, `_FusedMatMul`, …). */
  name: string;
  /** Time per step, summed over this kernel's calls; null when `timed` is 'unavailable'. */
  ms: number | null;
  /** Calls per step. */
  count: number;
  /** ms / the profiled step's wall time; null when untimed. */
  share: number | null;
  /** Achieved GFLOP/s, for GEMM and convolution kernels (FLOPs from their shapes, kernelFlops); absent otherwise. */
  gflops?: number;
}

export interface StepProfile {
  /** Profiled steps; every per-step figure is the mean over them. */
  steps: number;
  timed: KernelTiming;
  /** How the kernel times were measured, or why there are none. */
  note: string;
  /** Wall time of a profiled step (mean), the profiler's own overhead included. */
  stepMs: number;
  /** All kernels' time per step (not only the `kernels` listed); null when untimed. */
  kernelsMs: number | null;
  /** The top kernels by time (by count when untimed), at most `top` of them. */
  kernels: KernelTotal[];
  /** Kernel names not listed in `kernels`, and their time and calls per step. */
  rest: { names: number; ms: number | null; count: number };
  /** GFLOP per step of the kernels whose FLOPs are known (kernelFlops), and their rate over their own time. */
  gflop: number;
  gflops?: number;
}

type ProfiledKernel = Awaited<ReturnType<typeof tf.profile>>['kernels'][number];

/** How this backend's kernel times are measured (see KernelTiming). */
export function kernelTiming(selection: Pick<BackendSelection, 'backend' | 'provider'>): { timed: KernelTiming; note: string } {
  if (selection.backend === 'webgpu') {
    // A public field of tfjs-backend-webgpu's WebGPUBackend: device.features.has('timestamp-query').
    const timestamps = (tf.backend() as { supportTimestampQuery?: unknown }).supportTimestampQuery === true;
    return timestamps
      ? { timed: 'gpu-timestamps', note: 'GPU timestamp queries around each kernel; profiling submits kernels one by one, so the profiled step is slower than an unprofiled one' }
      : { timed: 'unavailable', note: "the WebGPU device has no 'timestamp-query' feature (the adapter does not offer it), so tfjs cannot time kernels; calls are counted" };
  }
  if (selection.provider === '@tensorflow/tfjs-node-gpu') {
    return { timed: 'unavailable', note: 'tfjs-node-gpu launches CUDA kernels asynchronously: a wall clock around the launch is not the kernel time; calls are counted' };
  }
  return { timed: 'wall', note: `wall clock around each kernel (${selection.backend} runs kernels synchronously)` };
}

const size = (shape: readonly number[] | null | undefined): number => (shape ? shape.reduce((a, b) => a * b, 1) : 0);

/**
 * Multiply-add FLOPs (2 per MAC) of one call of a GEMM or convolution kernel, from the shapes tf.profile records
 * (inputs in the op's own order: {a, b, …}, {x, filter, …}, {dy, filter}, {x, dy}, {dy, x, filter, …}); undefined for
 * other kernels.
 * Padding is not subtracted: the figure counts what a dense GEMM of these shapes does.
 */
export function kernelFlops(name: string, inputShapes: readonly (readonly number[] | null)[], outputShapes: readonly (readonly number[])[]): number | undefined {
  const out = outputShapes[0];
  const [first, second] = inputShapes;
  if (!out || !first || !second) return undefined;
  switch (name) {
    case 'BatchMatMul':
    case '_FusedMatMul': {
      // out [..., M, N]; a is [..., M, K] or, transposed, [..., K, M]. K is the dimension of a that is not M.
      const m = out[out.length - 2];
      const rows = first[first.length - 2];
      const cols = first[first.length - 1];
      if (m === undefined || rows === undefined || cols === undefined) return undefined;
      return 2 * size(out) * (rows === m ? cols : rows);
    }
    case 'Conv2D':
    case 'FusedConv2D':
    case CONV_BATCH_NORM:
    case CONV_RELU_POOL:
    case 'Conv2DBackpropInput': {
      // filter [fh, fw, inC, outC]: each output (Conv2D), each dy element (BackpropInput) or each of the four outputs
      // a 2×2 window of CONV_RELU_POOL's pooled output covers takes fh·fw·inC MACs; CONV_BATCH_NORM's first output is
      // the convolution's.
      const [fh, fw, inC] = second;
      if (fh === undefined || fw === undefined || inC === undefined) return undefined;
      const outputs = name === 'Conv2DBackpropInput' ? size(first) : name === CONV_RELU_POOL ? 4 * size(out) : size(out);
      return 2 * outputs * fh * fw * inC;
    }
    case CONV_RELU_POOL_GRAD: {
      // {dy (pooled), x, filter, …} → [dx] [dFilter, dBias]: each convolution gradient it returns (the 4-D outputs)
      // takes fh·fw·inC MACs per element the pooled dy's windows cover (four per pooled element).
      const [fh, fw, inC] = inputShapes[2] ?? [];
      if (fh === undefined || fw === undefined || inC === undefined) return undefined;
      return 2 * 4 * size(first) * fh * fw * inC * outputShapes.filter((s) => s.length === 4).length;
    }
    case CONV_BATCH_NORM_GRAD: {
      // {dy, x, filter, z, …} → [dx] [dFilter] dScale dOffset: each convolution gradient it returns (the 4-D outputs)
      // takes fh·fw·inC MACs per element of the convolution's output z.
      const [fh, fw, inC] = inputShapes[2] ?? [];
      const z = inputShapes[3];
      if (fh === undefined || fw === undefined || inC === undefined || !z) return undefined;
      return 2 * size(z) * fh * fw * inC * outputShapes.filter((s) => s.length === 4).length;
    }
    case 'Conv2DBackpropFilter': {
      // {x, dy} → filter [fh, fw, inC, outC]: each dy element meets fh·fw·inC inputs.
      const outC = out[3];
      return outC ? (2 * size(second) * size(out)) / outC : undefined;
    }
    default:
      return undefined;
  }
}

/**
 * Sums a tf.profile kernel list by name over `steps` steps of `stepMs` mean wall time. Only entries `isKernel` accepts
 * are counted: tf.profile also records each custom-gradient op (`softmaxCrossEntropy__op`, `fusedMatMul__op`) as
 * an entry whose time contains the kernels it runs, which are recorded on their own too. Kernel times that are not
 * numbers (tfjs reports `{error}` when a timer fails) are left out of the sums; with `timed` 'unavailable' no time is
 * summed at all, since tfjs reports 0 there, not a measurement.
 */
export function summarizeKernels(
  kernels: readonly ProfiledKernel[],
  options: { steps: number; stepMs: number; top: number; timed: KernelTiming; note: string; isKernel: (name: string) => boolean },
): StepProfile {
  const { steps, stepMs, top, timed, note, isKernel } = options;
  const byName = new Map<string, { ms: number; count: number; flops: number; flopsMs: number }>();
  for (const k of kernels) {
    if (!isKernel(k.name)) continue;
    const entry = byName.get(k.name) ?? { ms: 0, count: 0, flops: 0, flopsMs: 0 };
    const ms = typeof k.kernelTimeMs === 'number' && Number.isFinite(k.kernelTimeMs) ? k.kernelTimeMs : 0;
    const flops = kernelFlops(k.name, k.inputShapes, k.outputShapes);
    entry.ms += ms;
    entry.count += 1;
    if (flops !== undefined) {
      entry.flops += flops;
      entry.flopsMs += ms;
    }
    byName.set(k.name, entry);
  }
  const timedOk = timed !== 'unavailable';
  const all = [...byName.entries()].map(([name, e]) => ({ name, ...e }));
  all.sort((a, b) => (timedOk ? b.ms - a.ms : 0) || b.count - a.count || a.name.localeCompare(b.name));
  const perStep = (x: number): number => x / steps;
  const listed = all.slice(0, top).map((e): KernelTotal => ({
    name: e.name,
    ms: timedOk ? roundTo(perStep(e.ms), 3) : null,
    count: roundTo(perStep(e.count), 2),
    share: timedOk && stepMs > 0 ? roundTo(perStep(e.ms) / stepMs, 4) : null,
    ...(timedOk && e.flops > 0 && e.flopsMs > 0 ? { gflops: roundTo(e.flops / (e.flopsMs * 1e6), 2) } : {}),
  }));
  const rest = all.slice(top);
  const flops = all.reduce((n, e) => n + e.flops, 0);
  const flopsMs = all.reduce((n, e) => n + e.flopsMs, 0);
  return {
    steps,
    timed,
    note,
    stepMs: roundTo(stepMs, 3),
    kernelsMs: timedOk ? roundTo(perStep(all.reduce((n, e) => n + e.ms, 0)), 3) : null,
    kernels: listed,
    rest: { names: rest.length, ms: timedOk ? roundTo(perStep(rest.reduce((n, e) => n + e.ms, 0)), 3) : null, count: roundTo(perStep(rest.reduce((n, e) => n + e.count, 0)), 2) },
    gflop: roundTo(perStep(flops) / 1e9, 6),
    ...(timedOk && flops > 0 && flopsMs > 0 ? { gflops: roundTo(flops / (flopsMs * 1e6), 2) } : {}),
  };
}

/**
 * Runs `runStep` `steps` times under tf.profile and sums its kernels (summarizeKernels). Run it after warm-up: the
 * first steps compile shaders (webgpu) and grow the wasm heap, which is not where a steady step spends its time.
 */
export async function profileSteps(
  runStep: () => Promise<void>,
  options: { steps: number; top: number; selection: Pick<BackendSelection, 'backend' | 'provider'> },
): Promise<StepProfile> {
  const { timed, note } = kernelTiming(options.selection);
  const backendName = tf.getBackend();
  const wall: number[] = [];
  const info = await tf.profile(async () => {
    for (let i = 0; i < options.steps; i++) {
      const t0 = performance.now();
      await runStep();
      wall.push(performance.now() - t0);
    }
  });
  const stepMs = wall.reduce((a, b) => a + b, 0) / options.steps;
  const isKernel = (name: string): boolean => tf.getKernel(name, backendName) !== undefined;
  return summarizeKernels(info.kernels, { steps: options.steps, stepMs, top: options.top, timed, note, isKernel });
}
