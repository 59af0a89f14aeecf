import { hostname } from 'node:os';
import { Registry } from 'prom-client';
import { resumableCheckpoint, runFinished, runTrain, type Io, type TrainSummary } from './run.js';
import { startRemoteGroup } from './start-group.js';
import { narrowConfig, trainConfigSchema, type CoordinatorConfig } from '../shared/core/config.js';
import { MnistDdpError } from '../shared/core/errors.js';
import { componentLogger } from '../shared/core/log.js';
import { createCoordinatorMetrics, createTransportMetrics, startThreadedMetricsServer } from '../shared/metrics/index.js';
import { coordinatorSecurity } from '../shared/security/transport.js';
import { writeScrapeTargets } from './targets-file.js';
import { coordinatorScrapeHost, scrapeTargets } from './scrape-targets.js';
import { localAddresses } from './inbox-reachability.js';
import type { WorkerRecord } from './membership.js';

function hostOf(endpoint: string): string {
  return /^tcp:\/\/([^:/]+):/.exec(endpoint)?.[1] ?? '127.0.0.1';
}

/**
 * `mnist-ddp coordinator`: the control plane of a run whose workers are started independently (pm2, or by hand on
 * other machines). Elastic by default: workers may join or leave at any step boundary. Serves /metrics (cluster
 * view) and keeps a Prometheus file_sd targets file listing itself and the active workers.
 */
export async function runCoordinator(config: CoordinatorConfig, io: Io): Promise<TrainSummary> {
  const log = componentLogger('coordinator');
  const registry = new Registry();
  // First: a missing key or an exposed plaintext bind fails before anything listens.
  const security = coordinatorSecurity(config, config.bind, log);
  const metrics = createCoordinatorMetrics(registry);
  const transportMetrics = createTransportMetrics(registry);
  // Own thread: checkpoint writes (fsync) and evaluation merges block this event loop for up to ~200 ms.
  const metricsServer = await startThreadedMetricsServer({ registry, host: config.metricsHost, port: config.coordinatorMetricsPort, portKey: 'coordinatorMetricsPort', log });
  const ownAddresses = localAddresses();
  const warnedUnscrapable = new Set<number>();
  const publishTargets = async (active: readonly WorkerRecord[]): Promise<void> => {
    if (!config.targetsFile) return;
    const self = { host: await coordinatorScrapeHost(config.metricsHost, config.bind, active), port: metricsServer.port, instanceName: hostname() };
    const { targets, unscrapable } = scrapeTargets(self, active, ownAddresses);
    for (const w of unscrapable.filter((x) => !warnedUnscrapable.has(x.id))) {
      warnedUnscrapable.add(w.id);
      log.warn({ worker: w.id, host: w.host, metricsHost: w.metricsHost }, `worker ${w.id} (${w.host}) serves /metrics on ${w.metricsHost} only, which no other host can scrape: left out of ${config.targetsFile}; start it with --metrics-host 0.0.0.0`);
    }
    await writeScrapeTargets(config.targetsFile, targets);
  };
  await publishTargets([]);
  // A finished run is not trained over again: that would replace its checkpoint and history (a coordinator that pm2
  // starts again after its run, or one started by hand on an old run directory).
  if (!config.resume && config.autoResume && runFinished(config.runDir)) {
    await metricsServer.close();
    throw new MnistDdpError('RUN_FINISHED', `the run in ${config.runDir} is finished (eval.json); start a new run in another --run-dir (MNIST_DDP_RUN_DIR; pm2: \`pm2 delete all\` then \`pm2 start ecosystem.config.js\`), or pass --no-auto-resume to train over it`, { runDir: config.runDir });
  }
  let finished = false;
  try {
    // Only the train keys: bind, targets file and the rest are this process's, not the run's (they would end up in
    // config.json, the checkpoint and every worker's welcome).
    // A coordinator restarted (pm2) over an unfinished run directory continues from its latest checkpoint (issue #14).
    const resume = config.resume ?? (config.autoResume ? resumableCheckpoint(config.runDir) : undefined);
    if (resume && !config.resume) log.warn({ resume }, `resuming the unfinished run in ${config.runDir} from ${resume}`);
    const summary = await runTrain(narrowConfig(trainConfigSchema, config, { workers: config.minWorkers, ...(resume ? { resume } : {}) }), io, async (run) => {
      const group = await startRemoteGroup(run, config.minWorkers, {
        bind: config.bind, elastic: config.elastic, joinTimeoutMs: config.joinTimeoutMs, stepTimeoutMs: config.stepTimeoutMs,
        heartbeatTimeoutMs: config.heartbeatTimeoutMs, rejoinTimeoutMs: config.rejoinTimeoutMs, minWorkers: config.minWorkers, digestEvery: config.digestEvery, security, transportObserver: transportMetrics,
        onRejectedFrame: (reason) => metrics.rejectFrame(reason),
        onMembershipChange: (active, generation) => {
          metrics.workers.set(active.length);
          metrics.generation.set(generation);
          metrics.clearWorkers();
          void publishTargets(active).catch((err: Error) => log.warn({ err: err.message }, 'could not write the Prometheus targets file'));
        },
      }, log);
      log.info({ host: hostOf(config.bind) }, 'training started');
      return group;
    }, {
      onStep: (e) => {
        metrics.epoch.set(e.epoch);
        metrics.epochProgress.set(e.cursor / e.epochSize);
        metrics.learningRate.set(e.lr);
        for (const r of e.reports) {
          const seconds = (r.computeMs + r.allReduceMs + r.applyMs) / 1000;
          metrics.reportWorker(r.rank, { samplesPerSecond: seconds > 0 ? r.localCount / seconds : 0, stepSeconds: seconds, loss: r.loss, batchSamples: r.localCount });
        }
        metricsServer.publish();
      },
      onEpoch: (e) => {
        if (e.validation) {
          metrics.validationAccuracy.set(e.validation.accuracy);
          metrics.validationLoss.set(e.validation.loss);
        }
        metricsServer.publish();
      },
    });
    finished = true;
    return summary;
  } finally {
    // The run is over: per-worker gauges and cluster throughput left at their last values would show an idle
    // cluster (pm2 keeps this process serving) as still training.
    metrics.clearWorkers();
    if (config.exitWhenDone || !finished) {
      await metricsServer.close();
    } else {
      // Without this the process would exit (nothing else holds it), and pm2 would start it again.
      metricsServer.keepProcessAlive();
      log.info('run finished; serving /metrics until stopped (pm2 stop coordinator)');
    }
  }
}
