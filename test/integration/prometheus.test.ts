import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeScrapeTargets } from '../../src/coordinator/targets-file.js';
import { startMetricsFixture, type MetricsFixture } from '../helpers/metrics-fixture.js';

const REPO = fileURLToPath(new URL('../..', import.meta.url));
const HAS_PROMETHEUS = spawnSync('prometheus', ['--version']).status === 0;
if (!HAS_PROMETHEUS) console.warn('[prometheus.test] `prometheus` not found on PATH: skipping (apt-get install prometheus)');

/** Values Grafana would substitute; 30s ≥ 4 × the 1s scrape interval, as $__rate_interval guarantees. */
const GRAFANA_VARIABLES: Record<string, string> = {
  __rate_interval: '30s',
  __interval: '5s',
  __range: '5m',
};

interface DashboardTarget {
  expr?: string;
  refId?: string;
}
interface DashboardPanel {
  title?: string;
  type?: string;
  targets?: DashboardTarget[];
  panels?: DashboardPanel[];
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
  const visit = (panels: DashboardPanel[]): void => {
    for (const panel of panels) {
      for (const t of panel.targets ?? []) {
        if (t.expr) out.push({ panel: `${panel.title ?? '?'} [${t.refId ?? '?'}]`, expr: substitute(t.expr) });
      }
      visit(panel.panels ?? []);
    }
  };
  visit(dashboard.panels);
  return out;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

async function until<T>(what: string, probe: () => Promise<T | undefined>, deadlineMs: number): Promise<T> {
  const end = Date.now() + deadlineMs;
  let last: unknown;
  while (Date.now() < end) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`timed out after ${deadlineMs} ms waiting for ${what}${last ? `: ${String(last)}` : ''}`);
}

interface QueryResponse {
  status: 'success' | 'error';
  error?: string;
  data?: { resultType: string; result: Array<{ metric: Record<string, string>; value: [number, string] }> };
}

describe.skipIf(!HAS_PROMETHEUS)('dashboard PromQL against a real Prometheus', () => {
  let dir = '';
  let fixture: MetricsFixture | undefined;
  let prometheus: ChildProcess | undefined;
  let promLog = '';
  let base = '';

  async function api<T>(path: string): Promise<T> {
    const res = await fetch(`${base}${path}`, { signal: AbortSignal.timeout(5_000) });
    return (await res.json()) as T;
  }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mnistddp-prom-'));
    fixture = await startMetricsFixture(2);
    await writeScrapeTargets(join(dir, 'targets', 'mnist-ddp.json'), fixture.targets);
    // Same job name and file_sd layout as deploy/prometheus.yml, faster scrapes.
    await writeFile(
      join(dir, 'prometheus.yml'),
      [
        'global:',
        '  scrape_interval: 1s',
        '  scrape_timeout: 1s',
        '  evaluation_interval: 1s',
        'scrape_configs:',
        '  - job_name: mnist-ddp',
        '    file_sd_configs:',
        '      - files: [targets/*.json]',
        '        refresh_interval: 1s',
        '',
      ].join('\n'),
    );
    const port = await freePort();
    base = `http://127.0.0.1:${port}`;
    prometheus = spawn(
      'prometheus',
      [
        `--config.file=${join(dir, 'prometheus.yml')}`,
        `--storage.tsdb.path=${join(dir, 'data')}`,
        `--web.listen-address=127.0.0.1:${port}`,
        '--log.level=warn',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    prometheus.stdout?.on('data', (c: Buffer) => (promLog += c.toString()));
    prometheus.stderr?.on('data', (c: Buffer) => (promLog += c.toString()));
    const expected = fixture.targets.length;
    await until(
      `${expected} targets up in Prometheus`,
      async () => {
        if (prometheus?.exitCode !== null) throw new Error(`prometheus exited (${prometheus?.exitCode}): ${promLog}`);
        const body = await api<{ data: { activeTargets: Array<{ health: string }> } }>('/api/v1/targets');
        const up = body.data.activeTargets.filter((t) => t.health === 'up').length;
        return up === expected ? true : undefined;
      },
      30_000,
    );
  });

  afterAll(async () => {
    const proc = prometheus;
    if (proc && proc.exitCode === null) {
      const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
      proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    }
    await fixture?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('every panel expression is valid PromQL and returns finite data', async () => {
    const queries = await dashboardQueries();
    expect(queries.length).toBeGreaterThanOrEqual(20);
    const pending = new Map(queries.map((q) => [q.expr, q]));
    const lastResult = new Map<string, string>();
    // rate() needs two scrapes in the window and histogram_quantile a non-zero bucket rate: poll until all have data.
    await until(
      'every dashboard query to return data',
      async () => {
        for (const [expr, q] of pending) {
          const body = await api<QueryResponse>(`/api/v1/query?query=${encodeURIComponent(expr)}`);
          if (body.status !== 'success') throw new Error(`invalid PromQL in panel "${q.panel}": ${expr}\n${body.error}`);
          const values = body.data?.result.map((r) => Number(r.value[1])) ?? [];
          lastResult.set(expr, JSON.stringify(body.data?.result ?? []).slice(0, 300));
          if (values.length > 0 && values.some((v) => Number.isFinite(v))) pending.delete(expr);
        }
        return pending.size === 0 ? true : undefined;
      },
      45_000,
    ).catch((err: unknown) => {
      const missing = [...pending.values()].map((q) => `  ${q.panel}: ${q.expr} → ${lastResult.get(q.expr) ?? 'no answer'}`);
      throw new Error(`${String(err)}\nqueries without data:\n${missing.join('\n')}`);
    });
    expect(pending.size).toBe(0);
  });
});
