import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../shared/core/backend.js';
import type { BenchConfig } from '../shared/core/config.js';
import type { GpuAdapterDescription } from '../shared/core/webgpu.js';
import { componentLogger } from '../shared/core/log.js';
import { gatherBatch, loadMnist } from '../shared/data/mnist.js';
import { Rng } from '../shared/data/rng.js';
import { median, roundTo } from '../shared/core/stats.js';
import { LocalReducer } from '../shared/train/reducer.js';
import { Replica } from '../shared/train/replica.js';
import { TrainStep } from '../shared/train/step.js';
import { profileSteps, type StepProfile } from '../shared/train/profile.js';

/** What both benches report: `bench` (one process) and `bench --workers N` (bench-distributed.ts). */
export interface ThroughputResult {
  backend: string;
  /** The GPU adapter (vendor, architecture, description, software or not), on webgpu. */
  adapter?: GpuAdapterDescription;
  model: string;
  /** Per worker; a step's global batch is workers × batchSize. */
  batchSize: number;
  workers: number;
  /** Timed steps, warm-up excluded. */
  steps: number;
  /** Median of `windows`. */
  samplesPerSec: number;
  /** samples/s of each timed window (all workers together); the headline figure is their median. */
  windows: number[];
  stepMsP50: number;
  computeMsP50: number;
  applyMsP50: number;
}

export interface BenchResult extends ThroughputResult {
  /** tf.memory().numTensors after the timed steps minus before: a leak per step shows here. */
  numTensorsDrift: number;
  /** With --profile: time per kernel of `profileSteps` steps run after the timed ones (shared/train/profile.ts). */
  profile?: StepProfile;
}

/**
 * Training throughput of one process on real MNIST batches: warm-up steps, then `windows` timed windows of
 * steps/windows steps each; samples/s is the median over windows (robust to a noisy neighbour on the machine).
 * With `profile`, `profileSteps` more steps run under tf.profile after the timed windows, so profiling slows none of
 * the timed steps and the tensor drift is measured without it.
 */
export async function runTrainingBench(config: BenchConfig): Promise<BenchResult> {
  const log = componentLogger('bench');
  const selection = await initBackend(config.backend, log);
  const data = loadMnist();
  const replica = await Replica.create({ model: config.model, seed: config.seed, optimizer: { name: config.optimizer, momentum: 0.9, weightDecay: 0 } });
  const step = new TrainStep(replica, new LocalReducer());
  const rng = new Rng(config.seed);
  const perm = rng.permutation(data.train.count);
  let cursor = 0;
  const nextBatch = () => {
    if (cursor + config.batchSize > perm.length) cursor = 0;
    const ids = perm.subarray(cursor, cursor + config.batchSize);
    // Keyed by position, as a worker keys its batches: a new dropout mask every step (train/dropout.ts).
    const batch = { ...gatherBatch(data.train.images, data.train.labels, ids), sampleKey: cursor };
    cursor += config.batchSize;
    return batch;
  };
  let stepId = 0;
  for (let i = 0; i < config.warmup; i++) await step.run(nextBatch(), stepId++, 0.01);
  const tensorsBefore = tf.memory().numTensors;
  const perWindow = Math.max(1, Math.floor(config.steps / config.windows));
  const windows: number[] = [];
  const stepMs: number[] = [];
  const computeMs: number[] = [];
  const applyMs: number[] = [];
  for (let w = 0; w < config.windows; w++) {
    const t0 = performance.now();
    for (let i = 0; i < perWindow; i++) {
      const s0 = performance.now();
      const outcome = await step.run(nextBatch(), stepId++, 0.01);
      stepMs.push(performance.now() - s0);
      computeMs.push(outcome.computeMs);
      applyMs.push(outcome.applyMs);
    }
    windows.push((perWindow * config.batchSize * 1000) / (performance.now() - t0));
  }
  const numTensorsDrift = tf.memory().numTensors - tensorsBefore;
  const profile = config.profile
    ? await profileSteps(async () => void (await step.run(nextBatch(), stepId++, 0.01)), { steps: config.profileSteps, top: config.profileTop, selection })
    : undefined;
  return {
    backend: selection.backend,
    ...(selection.adapter ? { adapter: selection.adapter } : {}),
    model: config.model,
    batchSize: config.batchSize,
    workers: 1,
    steps: perWindow * config.windows,
    samplesPerSec: roundTo(median(windows), 1),
    windows: windows.map((v) => roundTo(v, 1)),
    stepMsP50: roundTo(median(stepMs), 2),
    computeMsP50: roundTo(median(computeMs), 2),
    applyMsP50: roundTo(median(applyMs), 2),
    numTensorsDrift,
    ...(profile ? { profile } : {}),
  };
}

export function formatBench(r: BenchResult): string {
  return [
    `mnist-ddp bench: ${r.model}, batch ${r.batchSize}, backend ${r.backend}, ${r.workers} worker(s), ${r.steps} timed steps`,
    `  samples/s (median of ${r.windows.length} windows): ${r.samplesPerSec}   [${r.windows.join(', ')}]`,
    `  step p50 ${r.stepMsP50} ms (compute ${r.computeMsP50} ms, apply ${r.applyMsP50} ms); tensor drift ${r.numTensorsDrift}`,
    ...(r.profile ? formatProfile(r.profile, r.stepMsP50) : []),
  ].join('\n');
}

const fixed = (x: number | null | undefined, digits: number): string => (x === null || x === undefined ? '-' : x.toFixed(digits));
const percent = (x: number | null): string => (x === null ? '-' : `${(100 * x).toFixed(1)}%`);

/** The --profile table: per kernel, time and calls per step, share of the step, and GFLOP/s where FLOPs are known. */
function formatProfile(p: StepProfile, unprofiledStepMs: number): string[] {
  const header = `  profile of ${p.steps} step(s) after the timed ones: ${p.note}`;
  const coverage = p.kernelsMs === null
    ? `  step ${fixed(p.stepMs, 2)} ms profiled (${unprofiledStepMs} ms unprofiled p50); kernel times unavailable: calls per step only`
    : `  step ${fixed(p.stepMs, 2)} ms profiled (${unprofiledStepMs} ms unprofiled p50); kernels ${fixed(p.kernelsMs, 2)} ms = ${percent(p.stepMs > 0 ? p.kernelsMs / p.stepMs : null)} of it${p.timed === 'wall' ? '; the rest is outside kernels (JS optimiser, uploads, read-back, tape)' : ''}`;
  const flops = p.gflop > 0 ? [`  GEMM/conv kernels: ${p.gflop} GFLOP per step${p.gflops !== undefined ? ` at ${p.gflops} GFLOP/s` : ''}`] : [];
  const width = Math.max(24, ...p.kernels.map((k) => k.name.length));
  const row = (name: string, ms: string, share: string, count: string, gflops: string): string =>
    `    ${name.padEnd(width)} ${ms.padStart(10)} ${share.padStart(7)} ${count.padStart(10)} ${gflops.padStart(8)}`.trimEnd();
  const rows = p.kernels.map((k) => row(k.name, fixed(k.ms, 3), percent(k.share), fixed(k.count, Number.isInteger(k.count) ? 0 : 2), fixed(k.gflops, 2)));
  const rest = p.rest.names > 0
    ? [row(`(${p.rest.names} more kernels)`, fixed(p.rest.ms, 3), percent(p.rest.ms === null || p.stepMs <= 0 ? null : p.rest.ms / p.stepMs), fixed(p.rest.count, Number.isInteger(p.rest.count) ? 0 : 2), '')]
    : [];
  return [header, coverage, ...flops, row('kernel', 'ms/step', 'share', 'calls/step', 'GFLOP/s'), ...rows, ...rest];
}
