import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { writeScrapeTargets } from '../../src/coordinator/targets-file.js';
import { isMnistDdpError } from '../../src/shared/core/errors.js';
import {
  createCoordinatorMetrics,
  createWorkerMetrics,
  instanceIndexFromEnv,
  metricsPortFor,
  startThreadedMetricsServer,
  type MetricsServer,
} from '../../src/shared/metrics/index.js';
import { removeWorker } from '../helpers/coordinator-metrics.js';
import { httpGet } from '../helpers/http.js';
import { until } from '../helpers/poll.js';
import { HAS_PROMTOOL, promtoolCheckMetrics } from '../helpers/promtool.js';

if (!HAS_PROMTOOL) console.warn('[metrics.test] promtool not found on PATH: skipping `promtool check metrics` (apt-get install prometheus)');

/** Value of the sample `name{labels}` in a text exposition, independent of label order; undefined if absent. */
function sampleValue(body: string, name: string, labels: Record<string, string> = {}): number | undefined {
  const want = Object.entries(labels)
    .map(([k, v]) => `${k}="${v}"`)
    .sort()
    .join(',');
  for (const line of body.split('\n')) {
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const got = (match[2] ?? '').split(',').filter(Boolean).sort().join(',');
    if (got === want) return Number(match[3]);
  }
  return undefined;
}

function exerciseWorker(registry: Registry): void {
  const m = createWorkerMetrics(registry, { rank: 1 });
  m.samplesProcessed.inc(640);
  m.samplesPerSecond.set(1234.5);
  m.observeStepPhase('compute', 0.012);
  m.observeStepPhase('allreduce', 0.003);
  m.observeStepPhase('apply', 0.0015);
  m.loss.set(0.42);
  m.learningRate.set(0.01);
  m.epoch.set(2);
  m.epochProgress.set(0.25);
  m.allReduceBytes.inc(4 * 110_000);
  m.allReduceDuration.observe(0.0021);
  m.rejectFrame('stale');
}

function exerciseCoordinator(registry: Registry): ReturnType<typeof createCoordinatorMetrics> {
  const m = createCoordinatorMetrics(registry);
  m.workers.set(2);
  m.generation.set(3);
  m.epoch.set(2);
  m.epochProgress.set(0.25);
  m.learningRate.set(0.01);
  m.validationAccuracy.set(0.981);
  m.validationLoss.set(0.06);
  m.reportWorker(0, { samplesPerSecond: 1000, stepSeconds: 0.06, loss: 0.4, batchSamples: 40 });
  m.reportWorker(1, { samplesPerSecond: 1100, stepSeconds: 0.055, loss: 0.44, batchSamples: 88 });
  m.rejectFrame('duplicate');
  return m;
}

// The server the processes ship with (startThreadedMetricsServer); test/integration/threaded-metrics.test.ts covers
// what is particular to its thread (publishing, a scrape while the main thread is blocked).
describe('metrics server (real HTTP)', () => {
  const servers: MetricsServer[] = [];
  afterEach(async () => {
    await Promise.all(servers.splice(0).map((s) => s.close()));
  });

  /** Starts a server on `registry`; resolves once its thread serves the registry's body, not the placeholder before the first publish. */
  async function serve(registry: Registry): Promise<MetricsServer> {
    const server = await startThreadedMetricsServer({ registry, host: '127.0.0.1', port: 0 });
    servers.push(server);
    await until('the first published body', async () => ((await httpGet(server.port, '/metrics')).body.includes('# HELP') ? true : undefined), 5_000);
    return server;
  }

  for (const role of ['worker', 'coordinator'] as const) {
    it(`${role}: serves its metrics and answers a scrape in < 50 ms (median of 20)`, async () => {
      const registry = new Registry();
      if (role === 'worker') exerciseWorker(registry);
      else exerciseCoordinator(registry);
      const server = await serve(registry);
      expect(server.port).toBeGreaterThan(0);

      const first = await httpGet(server.port, '/metrics');
      expect(first.status).toBe(200);
      expect(first.contentType).toBe(registry.contentType);
      expect(first.body).toContain('process_cpu_user_seconds_total');
      if (role === 'worker') {
        const rank = { rank: '1' };
        expect(sampleValue(first.body, 'mnistddp_samples_processed_total', rank)).toBe(640);
        expect(sampleValue(first.body, 'mnistddp_step_duration_seconds_count', { ...rank, phase: 'allreduce' })).toBe(1);
        expect(sampleValue(first.body, 'mnistddp_step_duration_seconds_bucket', { ...rank, phase: 'allreduce', le: '0.005' })).toBe(1);
        expect(sampleValue(first.body, 'mnistddp_step_duration_seconds_count', { ...rank, phase: 'apply' })).toBe(1);
        expect(sampleValue(first.body, 'mnistddp_rejected_frames_total', { ...rank, reason: 'malformed' })).toBe(0);
        expect(sampleValue(first.body, 'mnistddp_rejected_frames_total', { ...rank, reason: 'stale' })).toBe(1);
        expect(sampleValue(first.body, 'mnistddp_allreduce_duration_seconds_count', rank)).toBe(1);
      } else {
        expect(sampleValue(first.body, 'mnistddp_cluster_samples_per_second')).toBe(2100);
        expect(sampleValue(first.body, 'mnistddp_worker_samples_per_second', { worker: '1' })).toBe(1100);
        // Each rank's share of the global batch (issue #13, mixed rings).
        expect(sampleValue(first.body, 'mnistddp_worker_batch_samples', { worker: '0' })).toBe(40);
        expect(sampleValue(first.body, 'mnistddp_worker_batch_samples', { worker: '1' })).toBe(88);
        expect(sampleValue(first.body, 'mnistddp_membership_generation')).toBe(3);
        expect(sampleValue(first.body, 'mnistddp_rejected_frames_total', { reason: 'duplicate' })).toBe(1);
      }


      const latencies: number[] = [];
      for (let i = 0; i < 20; i++) {
        const t0 = performance.now();
        const res = await httpGet(server.port, '/metrics');
        latencies.push(performance.now() - t0);
        expect(res.status).toBe(200);
      }
      latencies.sort((a, b) => a - b);
      const median = ((latencies[9] ?? 0) + (latencies[10] ?? 0)) / 2;
      expect(median, `scrape latencies (ms): ${latencies.map((l) => l.toFixed(1)).join(' ')}`).toBeLessThan(50);
    });
  }

  for (const role of ['worker', 'coordinator'] as const) {
    it.skipIf(!HAS_PROMTOOL)(`${role}: scraped exposition passes \`promtool check metrics\` (skipped if promtool is absent)`, async () => {
      const registry = new Registry();
      if (role === 'worker') exerciseWorker(registry);
      else exerciseCoordinator(registry);
      const server = await serve(registry);
      const { body } = await httpGet(server.port, '/metrics');
      const check = await promtoolCheckMetrics(body);
      expect(check.output, check.output).toBe('');
      expect(check.code, check.output).toBe(0);
    });
  }

  it('serves /healthz, 404s other paths, 405s other methods', async () => {
    const server = await startThreadedMetricsServer({ registry: new Registry(), host: '127.0.0.1', port: 0 });
    servers.push(server);
    const health = await httpGet(server.port, '/healthz');
    expect(health.status).toBe(200);
    expect(health.body).toBe('ok\n');
    expect((await httpGet(server.port, '/')).status).toBe(404);
    expect((await httpGet(server.port, '/metrics/extra')).status).toBe(404);
    expect((await httpGet(server.port, '/metrics', { method: 'POST' })).status).toBe(405);
  });

  it('rejects a port that is already bound with CONFIG_INVALID naming the port', async () => {
    const server = await startThreadedMetricsServer({ registry: new Registry(), host: '127.0.0.1', port: 0 });
    servers.push(server);
    const err = await startThreadedMetricsServer({ registry: new Registry(), host: '127.0.0.1', port: server.port }).catch((e: unknown) => e);
    expect(isMnistDdpError(err, 'CONFIG_INVALID')).toBe(true);
    expect(String((err as Error).message)).toContain(String(server.port));
    expect(String((err as Error).message)).toContain('MNIST_DDP_METRICS_PORT');
    // A port from another key is named by its own variable (the coordinator passes coordinatorMetricsPort: the
    // e2e test in cli-errors.test.ts checks that wiring).
    const coordinatorErr = await startThreadedMetricsServer({ registry: new Registry(), host: '127.0.0.1', port: server.port, portKey: 'coordinatorMetricsPort' }).catch((e: unknown) => e);
    expect(String((coordinatorErr as Error).message)).toContain('MNIST_DDP_COORDINATOR_METRICS_PORT');
  });

  it('close() resolves even with a kept-alive client connection', async () => {
    const server = await startThreadedMetricsServer({ registry: new Registry(), host: '127.0.0.1', port: 0 });
    await httpGet(server.port, '/healthz');
    await expect(server.close()).resolves.toBeUndefined();
  });
});

describe('metric factories', () => {
  it('register only on the registry passed in', () => {
    const a = new Registry();
    exerciseWorker(a);
    const b = new Registry();
    exerciseCoordinator(b);
    expect(a.getSingleMetric('mnistddp_workers')).toBeUndefined();
    expect(b.getSingleMetric('mnistddp_allreduce_bytes_total')).toBeUndefined();
  });

  it('help texts say what is set: the loss is the global batch mean, not a local batch loss (issue #12)', async () => {
    const w = new Registry();
    createWorkerMetrics(w, { defaultMetrics: false });
    const c = new Registry();
    createCoordinatorMetrics(c, { defaultMetrics: false });
    const help = (text: string, name: string): string => new RegExp(`^# HELP ${name} (.*)$`, 'm').exec(text)?.[1] ?? '';
    const workerText = await w.metrics();
    const coordinatorText = await c.metrics();
    expect(help(workerText, 'mnistddp_loss')).toMatch(/global batch/);
    expect(help(workerText, 'mnistddp_loss')).not.toMatch(/local batch/);
    expect(help(coordinatorText, 'mnistddp_worker_loss')).toMatch(/global batch/);
    expect(help(workerText, 'mnistddp_samples_per_second')).toMatch(/most recent step/);
  });

  it('setRank relabels at the next scrape; cluster throughput is recomputed when a rank\'s series are dropped', async () => {
    const w = new Registry();
    const wm = createWorkerMetrics(w, { rank: 0, defaultMetrics: false });
    wm.samplesProcessed.inc(5);
    wm.setRank(3);
    expect(sampleValue(await w.metrics(), 'mnistddp_samples_processed_total', { rank: '3' })).toBe(5);

    const c = new Registry();
    const cm = exerciseCoordinator(c);
    removeWorker(cm, 0);
    const text = await c.metrics();
    expect(text).not.toContain('worker="0"');
    expect(sampleValue(text, 'mnistddp_cluster_samples_per_second')).toBe(1100);
  });
});

describe('pm2 instance index and metrics port', () => {
  it('reads NODE_APP_INSTANCE, defaults to 0 outside pm2, rejects garbage', () => {
    expect(instanceIndexFromEnv({})).toBe(0);
    expect(instanceIndexFromEnv({ NODE_APP_INSTANCE: '2', pm_id: '7' })).toBe(2);
    expect(instanceIndexFromEnv({ WORKER_INDEX: '1' }, 'WORKER_INDEX')).toBe(1);
    expect(() => instanceIndexFromEnv({ NODE_APP_INSTANCE: 'x' })).toThrow(/NODE_APP_INSTANCE/);
  });
  it('offsets the base port; 0 stays ephemeral; overflow is a config error', () => {
    expect(metricsPortFor(9401, 0)).toBe(9401);
    expect(metricsPortFor(9401, 2)).toBe(9403);
    expect(metricsPortFor(0, 2)).toBe(0);
    expect(() => metricsPortFor(65535, 1)).toThrow(/MNIST_DDP_METRICS_PORT/);
  });
});

describe('writeScrapeTargets', () => {
  it('writes file_sd JSON atomically, leaving no temp files', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'mnistddp-sd-'));
    try {
      const path = join(dir, 'targets', 'mnist-ddp.json');
      await writeScrapeTargets(path, [
        { host: '127.0.0.1', port: 9400, labels: { role: 'coordinator' } },
        { host: '::1', port: 9401, labels: { role: 'worker', rank: '0' } },
      ]);
      await writeScrapeTargets(path, [{ host: '127.0.0.1', port: 9400, labels: { role: 'coordinator' } }]);
      expect(JSON.parse(await readFile(path, 'utf8'))).toEqual([{ targets: ['127.0.0.1:9400'], labels: { role: 'coordinator' } }]);
      expect(await readdir(join(dir, 'targets'))).toEqual(['mnist-ddp.json']);
      await expect(writeScrapeTargets(path, [{ host: 'h', port: 1, labels: { __bad: 'x' } }])).rejects.toThrow(/__bad/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
