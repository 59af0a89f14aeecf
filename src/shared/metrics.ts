/** Prometheus metrics for workers and the coordinator. Every factory takes the Registry to register on. */
export { ALLREDUCE_SECONDS_BUCKETS, STEP_SECONDS_BUCKETS } from './metrics/buckets.js';
export { METRIC_PREFIX, REJECT_REASONS, STEP_PHASES, type RejectReason, type StepPhase } from './metrics/labels.js';
export { createWorkerMetrics, type WorkerMetrics, type WorkerMetricsOptions } from './metrics/worker.js';
export {
  createCoordinatorMetrics,
  type CoordinatorMetrics,
  type CoordinatorMetricsOptions,
  type WorkerReport,
} from './metrics/coordinator.js';
export {
  startThreadedMetricsServer,
  type MetricsServer,
  type MetricsServerOptions,
} from './metrics/threaded-server.js';
export { instanceIndexFromEnv, metricsPortFor } from './metrics/instance.js';
export { registerProcessMetrics } from './metrics/process.js';
