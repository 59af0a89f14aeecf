import { Counter, Gauge, type Registry } from 'prom-client';
import { registerProcessMetrics } from './process.js';
import { METRIC_PREFIX, REJECT_REASONS, type RejectReason } from './labels.js';

export interface CoordinatorMetricsOptions {
  /** Register prom-client's process metrics (CPU, memory, event loop lag). Default true. */
  defaultMetrics?: boolean;
}

/** What a worker reports to the coordinator about itself; every field optional so partial reports work. */
export interface WorkerReport {
  samplesPerSecond?: number;
  stepSeconds?: number;
  loss?: number;
  /** Samples of the global batch the rank processed in its most recent step. */
  batchSamples?: number;
}

export interface CoordinatorMetrics {
  readonly registry: Registry;
  readonly workers: Gauge;
  readonly generation: Gauge;
  readonly epoch: Gauge;
  readonly epochProgress: Gauge;
  readonly learningRate: Gauge;
  readonly validationAccuracy: Gauge;
  readonly validationLoss: Gauge;
  readonly clusterSamplesPerSecond: Gauge;
  readonly workerSamplesPerSecond: Gauge<'worker'>;
  readonly workerStepSeconds: Gauge<'worker'>;
  readonly workerLoss: Gauge<'worker'>;
  readonly workerBatchSamples: Gauge<'worker'>;
  readonly rejectedFrames: Counter<'reason'>;
  rejectFrame(reason: RejectReason): void;
  /** Sets the per-worker gauges; cluster throughput is their sum, taken at each scrape. */
  reportWorker(rank: number, report: WorkerReport): void;
  /** Drops every per-worker series, e.g. when a new generation reassigns ranks. */
  clearWorkers(): void;
}

/**
 * Creates every coordinator metric on `registry` (never the global default registry). Call once per registry.
 */
export function createCoordinatorMetrics(
  registry: Registry,
  options: CoordinatorMetricsOptions = {},
): CoordinatorMetrics {
  const registers = [registry];
  const p = METRIC_PREFIX;
  if (options.defaultMetrics !== false) registerProcessMetrics(registry);

  const workers = new Gauge({ name: `${p}workers`, help: 'Workers in the current ring (membership generation).', registers });
  const generation = new Gauge({
    name: `${p}membership_generation`,
    help: 'Membership generation: increments each time the ring is formed anew (a worker joined or left).',
    registers,
  });
  const epoch = new Gauge({ name: `${p}epoch`, help: 'Epoch (0-based) of the most recently finished step.', registers });
  const epochProgress = new Gauge({
    name: `${p}epoch_progress`,
    help: 'Fraction (0..1) of the current epoch\'s training samples the cluster has finished.',
    registers,
  });
  const learningRate = new Gauge({ name: `${p}learning_rate`, help: 'Learning rate of the most recently finished step.', registers });
  const validationAccuracy = new Gauge({
    name: `${p}validation_accuracy`,
    help: 'Accuracy (0..1) of the most recent evaluation on the validation set.',
    registers,
  });
  const validationLoss = new Gauge({
    name: `${p}validation_loss`,
    help: 'Mean cross-entropy per example of the most recent evaluation on the validation set.',
    registers,
  });
  const workerSamplesPerSecond = new Gauge({
    name: `${p}worker_samples_per_second`,
    help: 'Samples per second of each worker\'s most recent step (its local batch over compute, all-reduce and apply), by rank.',
    labelNames: ['worker'] as const,
    registers,
  });
  const clusterSamplesPerSecond = new Gauge({
    name: `${p}cluster_samples_per_second`,
    help: 'Training throughput of the whole cluster: the sum of mnistddp_worker_samples_per_second over the workers.',
    registers,
    async collect() {
      const { values } = await workerSamplesPerSecond.get();
      this.set(values.reduce((sum, v) => sum + v.value, 0));
    },
  });
  const workerStepSeconds = new Gauge({
    name: `${p}worker_step_seconds`,
    help: 'Wall time of each worker\'s most recent step (compute + all-reduce + apply), by rank.',
    labelNames: ['worker'] as const,
    registers,
  });
  const workerLoss = new Gauge({
    name: `${p}worker_loss`,
    help: 'Mean training loss over the global batch of the most recent step, as each rank reported it (ranks agree), by rank.',
    labelNames: ['worker'] as const,
    registers,
  });
  const workerBatchSamples = new Gauge({
    name: `${p}worker_batch_samples`,
    help: 'Samples of the global batch each rank processed in its most recent step: its share (unequal under --balance throughput, which gives faster ranks more), by rank.',
    labelNames: ['worker'] as const,
    registers,
  });
  const rejectedFrames = new Counter({
    name: `${p}rejected_frames_total`,
    help: 'Control-plane frames the coordinator rejected, by reason.',
    labelNames: ['reason'] as const,
    registers,
  });
  for (const reason of REJECT_REASONS) rejectedFrames.inc({ reason }, 0);

  return {
    registry,
    workers,
    generation,
    epoch,
    epochProgress,
    learningRate,
    validationAccuracy,
    validationLoss,
    clusterSamplesPerSecond,
    workerSamplesPerSecond,
    workerStepSeconds,
    workerLoss,
    workerBatchSamples,
    rejectedFrames,
    rejectFrame: (reason) => rejectedFrames.inc({ reason }),
    reportWorker(rank, report) {
      const worker = String(rank);
      if (report.samplesPerSecond !== undefined) workerSamplesPerSecond.set({ worker }, report.samplesPerSecond);
      if (report.stepSeconds !== undefined) workerStepSeconds.set({ worker }, report.stepSeconds);
      if (report.loss !== undefined) workerLoss.set({ worker }, report.loss);
      if (report.batchSamples !== undefined) workerBatchSamples.set({ worker }, report.batchSamples);
    },
    clearWorkers() {
      workerSamplesPerSecond.reset();
      workerStepSeconds.reset();
      workerLoss.reset();
      workerBatchSamples.reset();
    },
  };
}
