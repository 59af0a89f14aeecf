import { Registry } from 'prom-client';
import type { ScrapeTarget } from '../../src/coordinator/targets-file.js';
import {
  REJECT_REASONS,
  createCoordinatorMetrics,
  createWorkerMetrics,
  startMetricsServer,
  type MetricsServer,
  type WorkerMetrics,
} from '../../src/shared/metrics.js';

export interface MetricsFixture {
  /** One coordinator and `workers` worker targets, labelled like the coordinator's real file_sd output. */
  targets: ScrapeTarget[];
  stop(): Promise<void>;
}

/**
 * A fake training run for Prometheus/Grafana tests: a coordinator and N workers, each on its own Registry and
 * metrics server (as separate processes would be), updated every `tickMs` with plausible values through the real
 * factories, so every dashboard query has data within a few scrapes.
 */
export async function startMetricsFixture(workers = 2, tickMs = 100): Promise<MetricsFixture> {
  const servers: MetricsServer[] = [];
  const targets: ScrapeTarget[] = [];
  const coordinator = createCoordinatorMetrics(new Registry());
  servers.push(await startMetricsServer({ registry: coordinator.registry, host: '127.0.0.1', port: 0 }));
  targets.push({ host: '127.0.0.1', port: servers[0]!.port, labels: { role: 'coordinator' } });

  const workerMetrics: WorkerMetrics[] = [];
  for (let rank = 0; rank < workers; rank++) {
    const metrics = createWorkerMetrics(new Registry(), { rank });
    const server = await startMetricsServer({ registry: metrics.registry, host: '127.0.0.1', port: 0 });
    servers.push(server);
    workerMetrics.push(metrics);
    targets.push({ host: '127.0.0.1', port: server.port, labels: { role: 'worker' } });
  }

  const batch = 64;
  const stepsPerEpoch = 50;
  let step = 0;
  coordinator.workers.set(workers);
  coordinator.generation.set(1);
  const tick = (): void => {
    step++;
    const epoch = Math.floor(step / stepsPerEpoch);
    const progress = (step % stepsPerEpoch) / stepsPerEpoch;
    const lr = 0.01 * 0.9 ** epoch;
    const loss = 2.3 / (1 + step / 20);
    workerMetrics.forEach((m, rank) => {
      const compute = 0.02 + 0.005 * rank + Math.random() * 0.01;
      const allreduce = 0.002 + Math.random() * 0.004;
      const apply = 0.001 + Math.random() * 0.001;
      m.observeStepPhase('compute', compute);
      m.observeStepPhase('allreduce', allreduce);
      m.observeStepPhase('apply', apply);
      m.allReduceDuration.observe(allreduce);
      m.allReduceBytes.inc(2 * 4 * 110_000);
      m.samplesProcessed.inc(batch);
      const samplesPerSecond = batch / (compute + allreduce + apply);
      m.samplesPerSecond.set(samplesPerSecond);
      m.loss.set(loss * (1 + 0.05 * rank));
      m.learningRate.set(lr);
      m.epoch.set(epoch);
      m.epochProgress.set(progress);
      if (step % 7 === 0) m.rejectFrame(REJECT_REASONS[(step / 7) % REJECT_REASONS.length]!);
      coordinator.reportWorker(rank, { samplesPerSecond, stepSeconds: compute + allreduce + apply, loss: loss * (1 + 0.05 * rank) });
    });
    coordinator.epoch.set(epoch);
    coordinator.epochProgress.set(progress);
    coordinator.learningRate.set(lr);
    if (step % 10 === 0) {
      coordinator.validationAccuracy.set(Math.min(0.99, 0.5 + step / 400));
      coordinator.validationLoss.set(loss * 1.1);
    }
    if (step % 13 === 0) coordinator.rejectFrame('stale');
  };
  tick();
  const timer = setInterval(tick, tickMs);

  return {
    targets,
    async stop() {
      clearInterval(timer);
      await Promise.all(servers.map((s) => s.close()));
    },
  };
}
