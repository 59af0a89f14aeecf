import type { CoordinatorMetrics } from '../../src/shared/metrics/coordinator.js';

/** Drops one rank's per-worker series (the product drops them all at once, with clearWorkers). */
export function removeWorker(metrics: CoordinatorMetrics, rank: number): void {
  const worker = String(rank);
  metrics.workerSamplesPerSecond.remove({ worker });
  metrics.workerStepSeconds.remove({ worker });
  metrics.workerLoss.remove({ worker });
  metrics.workerBatchSamples.remove({ worker });
}
