/** Prometheus metrics for workers and the coordinator. Every factory takes the Registry to register on. */
export { type RejectReason } from './metrics/labels.js';
export { createWorkerMetrics, type WorkerMetrics } from './metrics/worker.js';
export { createCoordinatorMetrics } from './metrics/coordinator.js';
export { startThreadedMetricsServer, type MetricsServer } from './metrics/threaded-server.js';
export { instanceIndexFromEnv, metricsPortFor } from './metrics/instance.js';
