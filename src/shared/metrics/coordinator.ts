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
  readonly rejectedFrames: Counter<'reason'>;
  rejectFrame(reason: RejectReason): void;
  /** Sets the per-worker gauges and recomputes cluster throughput as the sum over reporting workers. */
  reportWorker(rank: number, report: WorkerReport): void;
  /** Drops a departed worker's series so the dashboard does not show a flat line for a dead rank. */
  removeWorker(rank: number): void;
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

  const workers = new Gauge({ name: `${p}workers`, help: 'Workers in the current membership.', registers });
  const generation = new Gauge({
    name: `${p}membership_generation`,
    help: 'Membership generation; increments whenever a worker joins or leaves.',
    registers,
  });
  const epoch = new Gauge({ name: `${p}epoch`, help: 'Current epoch number (0-based).', registers });
  const epochProgress = new Gauge({
    name: `${p}epoch_progress`,
    help: 'Fraction of the current epoch the cluster has finished (0..1).',
    registers,
  });
  const learningRate = new Gauge({ name: `${p}learning_rate`, help: 'Current learning rate of the schedule.', registers });
  const validationAccuracy = new Gauge({
    name: `${p}validation_accuracy`,
    help: 'Accuracy (0..1) of the most recent evaluation on the validation set.',
    registers,
  });
  const validationLoss = new Gauge({
    name: `${p}validation_loss`,
    help: 'Loss of the most recent evaluation on the validation set.',
    registers,
  });
  const clusterSamplesPerSecond = new Gauge({
    name: `${p}cluster_samples_per_second`,
    help: 'Training throughput of the whole cluster: sum of the latest worker reports.',
    registers,
  });
  const workerSamplesPerSecond = new Gauge({
    name: `${p}worker_samples_per_second`,
    help: 'Training throughput a worker last reported, by rank.',
    labelNames: ['worker'] as const,
    registers,
  });
  const workerStepSeconds = new Gauge({
    name: `${p}worker_step_seconds`,
    help: 'Duration of the last full step a worker reported, by rank.',
    labelNames: ['worker'] as const,
    registers,
  });
  const workerLoss = new Gauge({
    name: `${p}worker_loss`,
    help: 'Training loss a worker last reported, by rank.',
    labelNames: ['worker'] as const,
    registers,
  });
  const rejectedFrames = new Counter({
    name: `${p}rejected_frames_total`,
    help: 'Frames dropped by the coordinator, by reason.',
    labelNames: ['reason'] as const,
    registers,
  });
  for (const reason of REJECT_REASONS) rejectedFrames.inc({ reason }, 0);

  const throughputByRank = new Map<number, number>();
  const updateCluster = (): void => {
    let sum = 0;
    for (const value of throughputByRank.values()) sum += value;
    clusterSamplesPerSecond.set(sum);
  };

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
    rejectedFrames,
    rejectFrame: (reason) => rejectedFrames.inc({ reason }),
    reportWorker(rank, report) {
      const worker = String(rank);
      if (report.samplesPerSecond !== undefined) {
        workerSamplesPerSecond.set({ worker }, report.samplesPerSecond);
        throughputByRank.set(rank, report.samplesPerSecond);
        updateCluster();
      }
      if (report.stepSeconds !== undefined) workerStepSeconds.set({ worker }, report.stepSeconds);
      if (report.loss !== undefined) workerLoss.set({ worker }, report.loss);
    },
    removeWorker(rank) {
      const worker = String(rank);
      workerSamplesPerSecond.remove({ worker });
      workerStepSeconds.remove({ worker });
      workerLoss.remove({ worker });
      throughputByRank.delete(rank);
      updateCluster();
    },
    clearWorkers() {
      workerSamplesPerSecond.reset();
      workerStepSeconds.reset();
      workerLoss.reset();
      throughputByRank.clear();
      updateCluster();
    },
  };
}
