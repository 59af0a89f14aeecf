import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import type { BenchResult } from '../../src/commands/bench.js';
import { CONV_BATCH_NORM, CONV_BATCH_NORM_GRAD } from '../../src/shared/kernels/conv-batch-norm.js';
import { CONV_RELU_POOL, CONV_RELU_POOL_GRAD } from '../../src/shared/kernels/conv-relu-pool.js';
import { kernelFlops } from '../../src/shared/train/profile.js';
import type { StepProfile } from '../../src/shared/train/profile.js';
import { lastJson, runCli } from '../helpers/cli.js';
import { probeWebgpu } from '../helpers/webgpu-probe.js';

/**
 * `mnist-ddp bench --profile` (issue #17): time per kernel of a few training steps, on wasm (wall clock) and on webgpu
 * (GPU timestamp queries when the device has them). The CLI runs as a real process; the FLOP counts are checked
 * against shapes that a real tf.profile recorded.
 */
const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const probe = probeWebgpu('bench-profile.test');
const QUICK = ['bench', '--model', 'mlp', '--steps', '4', '--windows', '1', '--warmup', '1', '--profile'];

/** Checks that hold for every timed profile: sums add up, shares are ms / stepMs, all kernels fit in the step. */
function expectConsistentTimes(p: StepProfile): void {
  expect(p.kernelsMs).not.toBeNull();
  const listed = p.kernels.reduce((n, k) => n + k.ms!, 0) + p.rest.ms!;
  // Each figure is rounded to 3 decimals on its own.
  expect(Math.abs(listed - p.kernelsMs!)).toBeLessThanOrEqual(0.001 * (p.kernels.length + 2));
  for (const k of p.kernels) {
    expect(k.ms).toBeGreaterThanOrEqual(0);
    expect(k.share!).toBeCloseTo(k.ms! / p.stepMs, 3);
  }
  // Kernels run inside the step: their times cannot add up to more than its wall time (+ 2% and 0.5 ms for rounding
  // and the timer's own reading).
  expect(p.kernelsMs!).toBeLessThanOrEqual(p.stepMs * 1.02 + 0.5);
  const sorted = p.kernels.map((k) => k.ms!);
  expect(sorted).toEqual([...sorted].sort((a, b) => b - a));
}

describe('kernelFlops: 2 FLOPs per multiply-add, from the shapes tf.profile records (issue #17)', () => {
  beforeAll(async () => {
    await tf.setBackend('cpu');
  });

  /** The profiled kernels of `f` whose name is `name`, as tf.profile reports them. */
  async function kernelsOf(name: string, f: () => tf.Tensor | tf.Tensor[]): Promise<{ inputShapes: number[][]; outputShapes: number[][] }[]> {
    const info = await tf.profile(() => tf.tidy(() => void f()));
    return info.kernels.filter((k) => k.name === name);
  }

  it('matMul, transposed or not, batched, and fused with a bias and relu', async () => {
    const a = tf.ones([8, 784]);
    const b = tf.ones([784, 128]);
    const aT = tf.ones([784, 8]);
    const bT = tf.ones([128, 784]);
    const plain = 2 * 8 * 784 * 128;
    for (const [x, y, transposeA, transposeB] of [[a, b, false, false], [aT, b, true, false], [a, bT, false, true], [aT, bT, true, true]] as const) {
      const [k] = await kernelsOf('BatchMatMul', () => tf.matMul(x, y, transposeA, transposeB));
      expect(kernelFlops('BatchMatMul', k!.inputShapes, k!.outputShapes), `transposeA ${transposeA}, transposeB ${transposeB}`).toBe(plain);
    }
    const [batched] = await kernelsOf('BatchMatMul', () => tf.matMul(tf.ones([3, 5, 7]), tf.ones([3, 7, 2])));
    expect(kernelFlops('BatchMatMul', batched!.inputShapes, batched!.outputShapes)).toBe(2 * 3 * 5 * 7 * 2);
    const [fused] = await kernelsOf('_FusedMatMul', () => tf.fused.matMul({ a, b, bias: tf.ones([128]), activation: 'relu' }));
    expect(kernelFlops('_FusedMatMul', fused!.inputShapes, fused!.outputShapes)).toBe(plain);
    tf.dispose([a, b, aT, bT]);
  });

  it('conv2d and both of its gradients; nothing for a kernel without a GEMM', async () => {
    // 'same' 3×3 on 28×28×4 → 16 channels, batch 2: every output takes 3·3·4 multiply-adds.
    const x = tf.ones([2, 28, 28, 4]) as tf.Tensor4D;
    const filter = tf.ones([3, 3, 4, 16]) as tf.Tensor4D;
    const macs = 2 * 28 * 28 * 16 * 3 * 3 * 4;
    const [forward] = await kernelsOf('Conv2D', () => tf.conv2d(x, filter, 1, 'same'));
    expect(kernelFlops('Conv2D', forward!.inputShapes, forward!.outputShapes)).toBe(2 * macs);
    const grads = (name: string) => kernelsOf(name, () => tf.grads((xs: tf.Tensor, fs: tf.Tensor) => tf.conv2d(xs as tf.Tensor4D, fs as tf.Tensor4D, 1, 'same').sum())([x, filter]));
    const [input] = await grads('Conv2DBackpropInput');
    const [weights] = await grads('Conv2DBackpropFilter');
    expect(kernelFlops('Conv2DBackpropInput', input!.inputShapes, input!.outputShapes)).toBe(2 * macs);
    expect(kernelFlops('Conv2DBackpropFilter', weights!.inputShapes, weights!.outputShapes)).toBe(2 * macs);
    // conv-relu-pool's kernel records its pooled output and codes: the four outputs under each window count.
    const pooled = [2, 14, 14, 16];
    expect(kernelFlops(CONV_RELU_POOL, [[...x.shape], [...filter.shape], [16]], [pooled, [2, 14, 14, 4]])).toBe(2 * macs);
    // Its gradient, from the pooled dy: each convolution gradient it returns (dx, dFilter; not dBias) counts as above.
    const gradInputs = [pooled, [...x.shape], [...filter.shape], pooled, [2, 14, 14, 4]];
    expect(kernelFlops(CONV_RELU_POOL_GRAD, gradInputs, [[...x.shape], [...filter.shape], [16]])).toBe(2 * 2 * macs);
    expect(kernelFlops(CONV_RELU_POOL_GRAD, gradInputs, [[...filter.shape], [16]])).toBe(2 * macs);
    // conv-batch-norm's kernels: the forward's first output is the convolution's; the gradient counts its 4-D outputs.
    const z = [2, 28, 28, 16];
    expect(kernelFlops(CONV_BATCH_NORM, [[...x.shape], [...filter.shape], [16], [16]], [z, z, [16], [16]])).toBe(2 * macs);
    const bnGradInputs = [z, [...x.shape], [...filter.shape], z, [16], [16], [16], [16]];
    expect(kernelFlops(CONV_BATCH_NORM_GRAD, bnGradInputs, [[...x.shape], [...filter.shape], [16], [16]])).toBe(2 * 2 * macs);
    expect(kernelFlops(CONV_BATCH_NORM_GRAD, bnGradInputs, [[...filter.shape], [16], [16]])).toBe(2 * macs);
    const [relu] = await kernelsOf('Relu', () => tf.relu(x));
    expect(kernelFlops('Relu', relu!.inputShapes, relu!.outputShapes)).toBeUndefined();
    tf.dispose([x, filter]);
  });
});

describe('bench --profile on wasm (issue #17)', () => {
  it('--json: MatMul kernels with positive wall times that fit in the step, calls per step, GFLOP', async () => {
    const r = await runCli([...QUICK, '--backend', 'wasm', '--batch-size', '16', '--profile-steps', '2', '--profile-top', '6', '--json']);
    expect(r.code, r.stderr.slice(-2000)).toBe(0);
    const result = lastJson<BenchResult>(r.stdout);
    const p = result.profile!;
    expect(p).toMatchObject({ steps: 2, timed: 'wall' });
    expect(p.kernels).toHaveLength(6);
    expect(p.rest.names).toBeGreaterThan(0);
    expectConsistentTimes(p);
    // A custom-gradient scope (softmaxCrossEntropy__op) contains kernels listed on their own: never a kernel here.
    expect(p.kernels.map((k) => k.name).join(' ')).not.toContain('__op');
    const matMuls = p.kernels.filter((k) => /MatMul/.test(k.name));
    expect(matMuls.length).toBeGreaterThan(0);
    for (const k of matMuls) {
      expect(k.ms!).toBeGreaterThan(0);
      expect(k.gflops!).toBeGreaterThan(0);
    }
    // mlp at batch 16: two dense layers' forward and weight gradients (784·128 + 128·10 each, no input gradient for
    // the images) and the head's input gradient, 2 FLOPs per multiply-add.
    expect(Math.abs(p.gflop - (2 * 16 * (2 * (784 * 128 + 128 * 10) + 128 * 10)) / 1e9)).toBeLessThan(1e-6);
    // Profiling runs after the timed steps: the drift the bench reports is the timed steps' own.
    expect(result.numTensorsDrift).toBe(0);
  });

  it('prints the table: step time, what the kernels account for, one row per kernel', async () => {
    const r = await runCli([...QUICK, '--backend', 'wasm', '--batch-size', '16', '--profile-steps', '1']);
    expect(r.code, r.stderr.slice(-2000)).toBe(0);
    expect(r.stdout).toContain('profile of 1 step(s) after the timed ones: wall clock around each kernel');
    expect(r.stdout).toMatch(/step [\d.]+ ms profiled \([\d.]+ ms unprofiled p50\); kernels [\d.]+ ms = [\d.]+% of it/);
    expect(r.stdout).toMatch(/^ {4}kernel +ms\/step +share +calls\/step +GFLOP\/s$/m);
    expect(r.stdout).toMatch(/^ {4}BatchMatMul +\d+\.\d{3} +\d+\.\d% +\d+ +\d+\.\d{2}$/m);
  });

  it('refuses --profile with worker processes, naming both', async () => {
    const r = await runCli([...QUICK, '--backend', 'wasm', '--workers', '1']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('error [CONFIG_INVALID]');
    expect(r.stderr).toContain('--profile profiles the in-process bench, not 1 worker processes');
  });
});

/** Whether the adapter offers 'timestamp-query', asked in a child process (Dawn keeps native handles). */
function adapterHasTimestamps(): boolean {
  const script = `import { createRequire } from 'node:module';
    const dawn = createRequire(process.cwd() + '/package.json')('webgpu');
    const adapter = await dawn.create([]).requestAdapter({ powerPreference: 'high-performance' });
    process.stdout.write('\\n' + JSON.stringify([...(adapter?.features ?? [])]) + '\\n', () => process.exit(0));`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
  return (JSON.parse(r.stdout.trim().split('\n').pop() ?? '[]') as string[]).includes('timestamp-query');
}

describe('bench --profile on webgpu (issue #17)', () => {
  it.skipIf(!probe.ok)(`GPU timestamps when the adapter offers them, else says the times are unavailable (${probe.adapter?.description ?? 'no adapter'})`, async () => {
    const timestamps = adapterHasTimestamps();
    const r = await runCli([...QUICK, '--backend', 'webgpu', '--batch-size', '8', '--profile-steps', '1', '--json']);
    expect(r.code, r.stderr.slice(-2000)).toBe(0);
    const p = lastJson<BenchResult>(r.stdout).profile!;
    const matMul = p.kernels.find((k) => k.name === 'BatchMatMul');
    expect(matMul?.count).toBeGreaterThan(0);
    if (timestamps) {
      // The device must have been created with the feature: tfjs times nothing otherwise.
      expect(p.timed).toBe('gpu-timestamps');
      expectConsistentTimes(p);
      expect(matMul!.ms!).toBeGreaterThan(0);
      expect(p.kernelsMs!).toBeGreaterThan(0);
    } else {
      expect(p.timed).toBe('unavailable');
      expect(p.kernelsMs).toBeNull();
      for (const k of p.kernels) expect([k.ms, k.share]).toEqual([null, null]);
    }
  });
});
