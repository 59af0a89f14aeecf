/** Prometheus metrics for workers and the coordinator. Every factory takes the Registry to register on. */
export { createWorkerMetrics, type WorkerMetrics } from './worker.js';
export { createCoordinatorMetrics } from './coordinator.js';
export { startThreadedMetricsServer, type MetricsServer } from './threaded-server.js';
export { instanceIndexFromEnv, metricsPortFor } from './instance.js';
export { createTransportMetrics, type TransportMetrics } from './transport.js';
