/**
 * Batch-norm kernel microbenchmark (issue #17): tfjs-backend-wasm's stock kernel against our fast path
 * (src/shared/kernels/fast-paths.ts, batch-norm.ts, channel-ops.ts) on the calls a `cnn-large` training step at B=64
 * makes around its two conv batch norms per block ([64,28,28,32] and [64,14,14,64]), each called in isolation.
 *   npx tsx bench/batch-norm-kernels.ts [--reps 15] [--json]
 * Both kernel functions are called directly (no engine overhead), alternately, `reps` times after 2 warm-up calls.
 * Reports the min and median ms of `reps` calls (output allocation included, as a kernel pays it). Inside a training
 * step the same calls take longer (their inputs are not in cache): `bench --profile` gives those times.
 */
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { registerWasmTrainingKernels } from '../src/shared/kernels/register.js';
import { flag, median, roundTo } from './common.js';

const REPS = Number(flag('reps', '15'));
const KERNELS = ['Mean', 'Sum', 'FusedBatchNorm', 'Add', 'Multiply', 'Sub', 'RealDiv', 'Cast'] as const;

interface Call { name: string; kernel: (typeof KERNELS)[number]; inputs: Record<string, tf.Tensor>; attrs: tf.NamedAttrMap }

function calls(): Call[] {
  const list: Call[] = [];
  for (const shape of [[64, 28, 28, 32], [64, 14, 14, 64]]) {
    const c = shape[3]!;
    const x = tf.randomUniform(shape, -1, 1, 'float32', 1);
    const v = tf.randomUniform([c], 0.5, 1.5, 'float32', 2);
    const v4 = v.reshape([1, 1, 1, c]);
    const s = `[${shape.join(',')}]`;
    list.push(
      { name: `Mean ${s} axes 0,1,2`, kernel: 'Mean', inputs: { x }, attrs: { axis: [0, 1, 2], keepDims: false } },
      { name: `Sum ${s} axes 0,1,2`, kernel: 'Sum', inputs: { x }, attrs: { axis: [0, 1, 2], keepDims: false } },
      { name: `FusedBatchNorm ${s}, [${c}] parameters`, kernel: 'FusedBatchNorm', inputs: { x, mean: v, variance: v, offset: v, scale: v }, attrs: { varianceEpsilon: 1e-3 } },
      { name: `Add ${s}+[${c}] (a layer's bias)`, kernel: 'Add', inputs: { a: x, b: v }, attrs: {} },
      { name: `Multiply ${s}·[${c}]`, kernel: 'Multiply', inputs: { a: x, b: v }, attrs: {} },
      { name: `Multiply [1,1,1,${c}]·${s}`, kernel: 'Multiply', inputs: { a: v4, b: x }, attrs: {} },
      { name: `Sub ${s}−[1,1,1,${c}]`, kernel: 'Sub', inputs: { a: x, b: v4 }, attrs: {} },
      { name: `RealDiv ${s}/[]`, kernel: 'RealDiv', inputs: { a: x, b: tf.scalar(3136) }, attrs: {} },
      { name: `Cast ${s} float32→float32`, kernel: 'Cast', inputs: { x }, attrs: { dtype: 'float32' } },
    );
  }
  return list;
}

async function main(): Promise<void> {
  await tf.setBackend('wasm');
  await tf.ready();
  const stock = Object.fromEntries(KERNELS.map((k) => [k, tf.getKernel(k, 'wasm')!.kernelFunc]));
  registerWasmTrainingKernels();
  const fastPath = Object.fromEntries(KERNELS.map((k) => [k, tf.getKernel(k, 'wasm')!.kernelFunc]));
  const backend = tf.backend();
  const summary = (ms: number[]) => ({ min: roundTo(Math.min(...ms), 3), median: roundTo(median(ms), 3) });
  const rows = calls().map((c) => {
    const ms = { stock: [] as number[], fastPath: [] as number[] };
    for (let r = 0; r < REPS + 2; r++) {
      for (const [which, kernel] of [['stock', stock], ['fastPath', fastPath]] as const) {
        const t0 = performance.now();
        const out = kernel[c.kernel]!({ inputs: c.inputs, backend, attrs: c.attrs }) as tf.TensorInfo;
        const dt = performance.now() - t0;
        if (r >= 2) ms[which].push(dt);
        backend.disposeData(out.dataId);
      }
    }
    return { call: c.name, stock: summary(ms.stock), fastPath: summary(ms.fastPath) };
  });
  if (process.argv.includes('--json')) console.log(JSON.stringify({ node: process.version, reps: REPS, rows }));
  else for (const r of rows) console.log(`${r.call.padEnd(44)} stock ${r.stock.min} ms (median ${r.stock.median})  fast path ${r.fastPath.min} ms (median ${r.fastPath.median})`);
}

main().catch((err: unknown) => { console.error(err); process.exit(1); });
