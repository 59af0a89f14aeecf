import type { WorkerMetrics } from '../shared/metrics/index.js';
import type { StepPlan, StepReport } from '../shared/train/worker-core.js';

/**
 * Publishes one finished step on the worker's /metrics. Runs once per step: a handful of gauge/histogram updates.
 * `sentBytes`: what the step's all-reduce sent (AllReducer.bytesSent before and after).
 */
export function recordStep(metrics: WorkerMetrics, report: StepReport, plan: StepPlan, epochSize: number, sentBytes: number, worldSize: number): void {
  const stepSeconds = (report.computeMs + report.allReduceMs + report.applyMs) / 1000;
  metrics.samplesProcessed.inc(report.localCount);
  if (stepSeconds > 0) metrics.samplesPerSecond.set(report.localCount / stepSeconds);
  metrics.observeStepPhase('compute', report.computeMs / 1000);
  metrics.observeStepPhase('allreduce', report.allReduceMs / 1000);
  metrics.observeStepPhase('apply', report.applyMs / 1000);
  if (Number.isFinite(report.loss)) metrics.loss.set(report.loss);
  metrics.learningRate.set(plan.lr);
  metrics.epoch.set(plan.epoch);
  metrics.epochProgress.set(Math.min(1, (plan.cursor + plan.count) / epochSize));
  if (worldSize > 1) {
    metrics.allReduceBytes.inc(sentBytes);
    metrics.allReduceDuration.observe(report.allReduceMs / 1000);
  }
}
