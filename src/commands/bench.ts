import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../shared/core/backend.js';
import type { GpuAdapterDescription } from '../shared/core/webgpu.js';
import type { BenchConfig } from '../shared/core/config.js';
import { componentLogger } from '../shared/core/log.js';
import { gatherBatch, loadMnist } from '../shared/data/mnist.js';
import { Rng } from '../shared/data/rng.js';
import { median, roundTo } from '../shared/core/stats.js';
import { LocalReducer } from '../shared/train/reducer.js';
import { Replica } from '../shared/train/replica.js';
import { TrainStep } from '../shared/train/step.js';

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
}

/**
 * Training throughput of one process on real MNIST batches: warm-up steps, then `windows` timed windows of
 * steps/windows steps each; samples/s is the median over windows (robust to a noisy neighbour on the machine).
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
    cursor += config.batchSize;
    return gatherBatch(data.train.images, data.train.labels, ids);
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
    numTensorsDrift: tf.memory().numTensors - tensorsBefore,
  };
}

export function formatBench(r: BenchResult): string {
  return [
    `mnist-ddp bench: ${r.model}, batch ${r.batchSize}, backend ${r.backend}, ${r.workers} worker(s), ${r.steps} timed steps`,
    `  samples/s (median of ${r.windows.length} windows): ${r.samplesPerSec}   [${r.windows.join(', ')}]`,
    `  step p50 ${r.stepMsP50} ms (compute ${r.computeMsP50} ms, apply ${r.applyMsP50} ms); tensor drift ${r.numTensorsDrift}`,
  ].join('\n');
}
