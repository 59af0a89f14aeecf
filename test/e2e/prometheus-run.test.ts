import { spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as zmq from 'zeromq';
import { exitWithin, startCli, startProcess, type BackgroundProcess } from '../helpers/cli.js';
import { freePort, freePortRange } from '../helpers/net.js';
import { StopPolling, until } from '../helpers/poll.js';
import { HAS_PROMTOOL, promtoolCheckMetrics } from '../helpers/promtool.js';

// Metrics issue ("every Grafana panel shows data on a real run"): a real coordinator and two real worker processes
// train while a real Prometheus finds them through the file_sd targets file the coordinator writes. Every PromQL
// expression of grafana/dashboards/mnist-ddp.json must return data; the live /metrics bodies of a worker and the
// coordinator must pass `promtool check metrics` (test/integration/metrics.test.ts runs the same check on a
// server fed by hand). This test guards the wiring of the real processes: a gauge never set, a label the dashboard
// groups by that no process exports, a target missing from the file.

const REPO = fileURLToPath(new URL('../..', import.meta.url));
const HAS_PROMETHEUS = spawnSync('prometheus', ['--version']).status === 0 && HAS_PROMTOOL;
if (!HAS_PROMETHEUS) console.warn('[prometheus-run.test] prometheus/promtool not on PATH: skipping (apt-get install prometheus)');

/**
 * What Grafana would substitute. $__rate_interval is max($__interval + scrape interval, 4 × scrape interval); 10 s
 * is that for a 1 s scrape and a 5-6 s $__interval, and short enough that a rate() answers only from live data.
 */
const GRAFANA_VARIABLES: Record<string, string> = { __rate_interval: '10s', __interval: '5s', __range: '5m' };

/**
 * 4 000 training samples × 300 epochs: far longer than every check below needs (rate() windows, an end-of-epoch
 * validation, a rejected frame counted and scraped), at any training speed; the last test stops the run with SIGTERM,
 * as `pm2 stop` would. A run sized to end on its own (30 epochs, about 20 s) raced those checks each time the kernels
 * got faster.
 */
const TRAIN_FLAGS = ['--train-subset', '4000', '--epochs', '300', '--warmup-steps', '0', '--validation-size', '1000', '--backend', 'wasm', '--no-report', '--seed', '7'];

interface DashboardPanel {
  title?: string;
  targets?: Array<{ expr?: string; refId?: string }>;
  panels?: DashboardPanel[];
}

interface PromTarget {
  health: string;
  lastError: string;
  labels: Record<string, string>;
  scrapeUrl: string;
}

interface QueryResponse {
  status: 'success' | 'error';
  error?: string;
  data?: { result: Array<{ metric: Record<string, string>; value: [number, string] }> };
}

function substitute(expr: string): string {
  return expr.replace(/\$\{?(\w+)\}?/g, (whole, name: string) => {
    const value = GRAFANA_VARIABLES[name];
    if (value === undefined) throw new Error(`dashboard expression uses unknown variable ${whole}: ${expr}`);
    return value;
  });
}

async function dashboardQueries(): Promise<Array<{ panel: string; expr: string }>> {
  const dashboard = JSON.parse(await readFile(join(REPO, 'grafana/dashboards/mnist-ddp.json'), 'utf8')) as { panels: DashboardPanel[] };
  const out: Array<{ panel: string; expr: string }> = [];
  const visit = (panels: readonly DashboardPanel[]): void => {
    for (const panel of panels) {
      for (const t of panel.targets ?? []) if (t.expr) out.push({ panel: `${panel.title ?? '?'} [${t.refId ?? '?'}]`, expr: substitute(t.expr) });
      visit(panel.panels ?? []);
    }
  };
  visit(dashboard.panels);
  return out;
}

async function fetchText(url: string): Promise<string> {
  const res = await fetch(url, { signal: AbortSignal.timeout(5_000) });
  if (!res.ok) throw new Error(`GET ${url}: HTTP ${res.status}`);
  return res.text();
}

/**
 * "Returns data" on a real run means more than "returns a series": prom-client exports an unlabelled gauge that was
 * never set as 0, so a forgotten `.set()` still answers. Every series must be finite, and non-zero unless zero is
 * the healthy value (no rejected frames); per-rank, per-phase, per-reason and per-process panels need one series
 * for each worker, phase, reason or process.
 */
function hasLiveData(expr: string, values: readonly number[]): boolean {
  const series = /by \(reason\)/.test(expr) ? 4 : /by \((le, )?phase\)/.test(expr) ? 3 : /job="mnist-ddp"/.test(expr) ? 3
    : /by \((le, )?rank\)|mnistddp_worker_/.test(expr) ? 2 : 1;
  const zeroIsHealthy = /rejected_frames/.test(expr);
  return values.length >= series && values.every((v) => Number.isFinite(v) && (zeroIsHealthy || v !== 0));
}

describe.skipIf(!HAS_PROMETHEUS)('Grafana dashboard on a real run: coordinator + 2 workers + Prometheus (file_sd)', () => {
  let dir = '';
  let targetsFile = '';
  let promBase = '';
  const procs: BackgroundProcess[] = [];
  let coordinator: BackgroundProcess | undefined;
  let control = '';
  const logs = (): string => procs.map((p) => `\n--- ${p.name} (exit ${p.child.exitCode ?? p.child.signalCode ?? 'running'}):\n${p.output().slice(-1_500)}`).join('');

  async function promApi<T>(path: string): Promise<T> {
    return JSON.parse(await fetchText(`${promBase}${path}`)) as T;
  }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mnistddp-prom-run-'));
    targetsFile = join(dir, 'targets', 'mnist-ddp.json');
    const [promPort, controlPort, coordinatorMetricsPort, workerMetricsBase] = [await freePort(), await freePort(), await freePort(), await freePortRange(2)];

    // deploy/prometheus.yml's job and file_sd layout, 1 s scrapes, pointed at the file the coordinator writes.
    await writeFile(
      join(dir, 'prometheus.yml'),
      [
        'global:',
        '  scrape_interval: 1s',
        '  scrape_timeout: 1s',
        '  evaluation_interval: 1s',
        'scrape_configs:',
        '  - job_name: mnist-ddp',
        '    metrics_path: /metrics',
        '    file_sd_configs:',
        `      - files: [${JSON.stringify(join(dir, 'targets', '*.json'))}]`,
        '        refresh_interval: 1s',
        '',
      ].join('\n'),
    );
    // The directory exists before Prometheus starts, as `mkdir -p runs/prometheus/targets` does in deploy/README.md;
    // otherwise file_sd logs "Error adding file watch" every refresh until the coordinator's first write.
    await mkdir(join(dir, 'targets'));
    promBase = `http://127.0.0.1:${promPort}`;
    // Prometheus first, so it watches the targets directory before the coordinator writes the file.
    procs.push(startProcess('prometheus', 'prometheus', [
      `--config.file=${join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${promPort}`, '--log.level=warn',
    ], { cwd: REPO, keepChars: 8_000 }));
    await until('Prometheus ready', async () => ((await fetch(`${promBase}/-/ready`)).ok ? true : undefined), 30_000, logs);

    control = `tcp://127.0.0.1:${controlPort}`;
    coordinator = startCli('coordinator', [
      'coordinator', '--bind', control, '--min-workers', '2', '--metrics-host', '127.0.0.1',
      '--coordinator-metrics-port', String(coordinatorMetricsPort), '--targets-file', targetsFile, '--run-dir', join(dir, 'run'), ...TRAIN_FLAGS,
    ], { cwd: REPO, keepChars: 8_000 });
    procs.push(coordinator);
    for (const instance of [0, 1]) {
      procs.push(startCli(`worker ${instance}`, [
        'worker', '--coordinator', control, '--backend', 'wasm', '--metrics-host', '127.0.0.1', '--metrics-port', String(workerMetricsBase),
      ], { cwd: REPO, keepChars: 8_000, env: { NODE_APP_INSTANCE: String(instance) } }));
    }

    let lastTargets: PromTarget[] = [];
    await until(
      'the coordinator and both workers up in Prometheus',
      async () => {
        for (const p of procs) if (p.child.exitCode !== null) throw new StopPolling(`${p.name} exited early (${p.child.exitCode})`);
        lastTargets = (await promApi<{ data: { activeTargets: PromTarget[] } }>('/api/v1/targets')).data.activeTargets;
        const up = lastTargets.filter((t) => t.health === 'up');
        const roles = up.map((t) => t.labels.role).sort();
        return roles.join(',') === 'coordinator,worker,worker' ? up : undefined;
      },
      90_000,
      () => `\ntargets: ${JSON.stringify(lastTargets)}${logs()}`,
    );
    // The pm2 port layout: coordinator on its port, worker i on base + NODE_APP_INSTANCE.
    const ports = lastTargets.map((t) => Number(new URL(t.scrapeUrl).port)).sort((a, b) => a - b);
    expect(ports).toEqual([coordinatorMetricsPort, workerMetricsBase, workerMetricsBase + 1].sort((a, b) => a - b));
  });

  afterAll(async () => {
    // Workers and coordinator first (Prometheus only reads), then Prometheus; SIGKILL after a short grace each (a
    // worker leaves at the next step boundary and then waits for a coordinator that may be gone: do not wait long).
    await Promise.all(procs.filter((p) => p.name !== 'prometheus').map((p) => p.stop(3_000)));
    await Promise.all(procs.filter((p) => p.name === 'prometheus').map((p) => p.stop(3_000)));
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('a live worker and the coordinator /metrics pass `promtool check metrics` mid-run', async () => {
    const groups = JSON.parse(await readFile(targetsFile, 'utf8')) as Array<{ targets: string[]; labels: Record<string, string> }>;
    for (const role of ['coordinator', 'worker']) {
      const group = groups.find((g) => g.labels.role === role);
      expect(group, `no ${role} in ${targetsFile}`).toBeDefined();
      const url = `http://${group!.targets[0]}/metrics`;
      // Wait for a worker to have finished a step, so the body holds observed histograms, not only zeroed series.
      const body = await until(`${role} /metrics with step data`, async () => {
        const text = await fetchText(url);
        return /^mnistddp_(samples_processed_total|cluster_samples_per_second)\S* [1-9]/m.test(text) ? text : undefined;
      }, 60_000, logs);
      const check = await promtoolCheckMetrics(body);
      expect(check.code, `promtool check metrics on ${role} ${url}:\n${check.output}`).toBe(0);
    }
  });

  it('every PromQL expression of every dashboard panel returns data while training', async () => {
    const queries = await dashboardQueries();
    expect(queries.length).toBeGreaterThanOrEqual(20);
    const pending = new Map(queries.map((q) => [q.expr, q]));
    const lastResult = new Map<string, string>();
    // rate() needs two scrapes in its window, histogram_quantile a non-zero bucket rate, validation panels the first
    // evaluation (end of epoch 1): poll until every query has data, while the run is still going.
    await until(
      'every dashboard query to return data',
      async () => {
        if (coordinator && coordinator.child.exitCode !== null) throw new StopPolling('the run ended before every panel had data');
        for (const [expr, q] of pending) {
          const body = await promApi<QueryResponse>(`/api/v1/query?query=${encodeURIComponent(expr)}`);
          if (body.status !== 'success') throw new StopPolling(`invalid PromQL in panel "${q.panel}": ${expr}\n${body.error}`);
          const result = body.data?.result ?? [];
          lastResult.set(expr, JSON.stringify(result).slice(0, 400));
          if (hasLiveData(expr, result.map((r) => Number(r.value[1])))) pending.delete(expr);
        }
        return pending.size === 0 ? true : undefined;
      },
      90_000,
      () => `\nqueries without data:\n${[...pending.values()].map((q) => `  ${q.panel}: ${q.expr} → ${lastResult.get(q.expr) ?? 'no answer'}`).join('\n')}${logs()}`,
    );
    expect(pending.size).toBe(0);
  });

  it('a malformed control frame sent to the coordinator shows on the "Rejected frames by reason" panel', async () => {
    const dealer = new zmq.Dealer({ linger: 0 });
    try {
      dealer.connect(control);
      await dealer.send([Buffer.from('not a control message'), Buffer.from('and a second frame')]);
      const query = 'sum by (reason) (mnistddp_rejected_frames_total{role="coordinator",reason="malformed"})';
      let last = '';
      await until('the coordinator to count the malformed frame', async () => {
        if (coordinator && coordinator.child.exitCode !== null) throw new StopPolling('the run ended first');
        const body = await promApi<QueryResponse>(`/api/v1/query?query=${encodeURIComponent(query)}`);
        last = JSON.stringify(body.data?.result ?? []);
        return Number(body.data?.result[0]?.value[1] ?? 0) >= 1 ? true : undefined;
      }, 30_000, () => `\n${query} → ${last}${logs()}`);
    } finally {
      dealer.close();
    }
  });

  it('SIGTERM stops the run at a step boundary: the coordinator exits 143 with RUN_INTERRUPTED, the workers 0', async () => {
    expect(coordinator!.running(), 'the run is still going when it is stopped').toBe(true);
    coordinator!.child.kill('SIGTERM');
    const trainers = procs.filter((p) => p.name !== 'prometheus');
    const codes = await Promise.all(trainers.map((p) => exitWithin(p, 60_000)));
    expect(trainers.map((p, i) => `${p.name}:${codes[i]}`), logs()).toEqual(['coordinator:143', 'worker 0:0', 'worker 1:0']);
    expect(coordinator!.stderr()).toMatch(/error \[RUN_INTERRUPTED\]: stopped by SIGTERM after step \d+/);
  }, 90_000);
});
