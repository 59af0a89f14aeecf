import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { registerProcessMetrics } from './process.js';
import { ALLREDUCE_SECONDS_BUCKETS, STEP_SECONDS_BUCKETS } from './buckets.js';
import { METRIC_PREFIX, REJECT_REASONS, STEP_PHASES, type RejectReason, type StepPhase } from './labels.js';

export interface WorkerMetricsOptions {
  /** Current ring rank; exported as the `rank` label on every series of this registry. */
  rank?: number;
  /** Register prom-client's process metrics (CPU, memory, event loop lag). Default true. */
  defaultMetrics?: boolean;
}

export interface WorkerMetrics {
  readonly registry: Registry;
  readonly samplesProcessed: Counter;
  readonly samplesPerSecond: Gauge;
  readonly stepDuration: Histogram<'phase'>;
  readonly loss: Gauge;
  readonly learningRate: Gauge;
  readonly epoch: Gauge;
  readonly epochProgress: Gauge;
  readonly allReduceBytes: Counter;
  readonly allReduceDuration: Histogram;
  readonly rejectedFrames: Counter<'reason'>;
  observeStepPhase(phase: StepPhase, seconds: number): void;
  rejectFrame(reason: RejectReason): void;
  /**
   * Ranks change when membership changes. Relabels every series of the registry at the next scrape (prom-client
   * applies default labels at serialisation), so counters continue under the new rank.
   */
  setRank(rank: number): void;
}

/**
 * Creates every worker metric on `registry` (never the global default registry). Call once per registry:
 * prom-client throws if a name is registered twice.
 */
export function createWorkerMetrics(registry: Registry, options: WorkerMetricsOptions = {}): WorkerMetrics {
  const registers = [registry];
  const p = METRIC_PREFIX;
  if (options.defaultMetrics !== false) registerProcessMetrics(registry);

  const samplesProcessed = new Counter({
    name: `${p}samples_processed_total`,
    help: 'Training samples this worker has run forward/backward on (its local batches).',
    registers,
  });
  const samplesPerSecond = new Gauge({
    name: `${p}samples_per_second`,
    help: 'Samples per second of this worker\'s most recent step: its local batch over compute + all-reduce + apply time.',
    registers,
  });
  const stepDuration = new Histogram({
    name: `${p}step_duration_seconds`,
    help: 'Wall time of one training step phase (compute = forward/backward, allreduce, apply = optimizer update).',
    labelNames: ['phase'] as const,
    buckets: [...STEP_SECONDS_BUCKETS],
    registers,
  });
  const loss = new Gauge({
    name: `${p}loss`,
    help: 'Mean training loss over the global batch (every rank\'s samples) of the most recent step; the same on every rank.',
    registers,
  });
  const learningRate = new Gauge({ name: `${p}learning_rate`, help: 'Learning rate of the most recent step.', registers });
  const epoch = new Gauge({ name: `${p}epoch`, help: 'Epoch (0-based) of the most recent step.', registers });
  const epochProgress = new Gauge({
    name: `${p}epoch_progress`,
    help: 'Fraction (0..1) of the current epoch\'s training samples the whole cluster has finished, as of this worker\'s most recent step.',
    registers,
  });
  const allReduceBytes = new Counter({
    name: `${p}allreduce_bytes_total`,
    help: 'Gradient bytes this worker sent in all-reduces, as they travel: 2(N-1)/N of the gradient buffer per step on the ring, whole buffers per round under recursive doubling, trainable gradients in 2 bytes each under --compress fp16|bf16 (frame headers not counted).',
    registers,
  });
  const allReduceDuration = new Histogram({
    name: `${p}allreduce_duration_seconds`,
    help: 'Wall time of one gradient all-reduce as seen by this worker (rings of 2 or more workers only).',
    buckets: [...ALLREDUCE_SECONDS_BUCKETS],
    registers,
  });
  const rejectedFrames = new Counter({
    name: `${p}rejected_frames_total`,
    help: 'Ring (data-plane) frames this worker rejected, by reason.',
    labelNames: ['reason'] as const,
    registers,
  });

  // Export every label value from the start: a dashboard series that appears only after the first event has no
  // rate() until its second sample, and absent series make "by reason" panels look broken.
  for (const phase of STEP_PHASES) stepDuration.zero({ phase });
  for (const reason of REJECT_REASONS) rejectedFrames.inc({ reason }, 0);

  const setRank = (rank: number): void => registry.setDefaultLabels({ rank: String(rank) });
  if (options.rank !== undefined) setRank(options.rank);

  return {
    registry,
    samplesProcessed,
    samplesPerSecond,
    stepDuration,
    loss,
    learningRate,
    epoch,
    epochProgress,
    allReduceBytes,
    allReduceDuration,
    rejectedFrames,
    observeStepPhase: (phase, seconds) => stepDuration.observe({ phase }, seconds),
    rejectFrame: (reason) => rejectedFrames.inc({ reason }),
    setRank,
  };
}
