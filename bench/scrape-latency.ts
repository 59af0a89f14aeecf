/**
 * How fast a live worker answers a Prometheus scrape while it trains (issue: "A /metrics scrape answers within
 * 50 ms"). Starts a real run: a coordinator and `--workers` worker processes (bin/mnist-ddp.js, real ring
 * all-reduce), then GETs worker 0's /metrics every `--interval-ms` from this process until the run ends, and prints
 * p50/p99/max of the scrape latency (request sent → last body byte; quantiles from bench/common.ts), plus the body size. The coordinator's /metrics
 * is scraped alongside at the same rate.
 *
 *   npx tsx bench/scrape-latency.ts [--workers 2] [--interval-ms 100] [--steps 150] [--json]
 *
 * Needs a build (`npx tsc -p tsconfig.build.json`). Also exports the run harness bench/metrics-overhead.ts uses.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startCli, type BackgroundProcess } from '../test/helpers/cli.js';
import { readSteps } from '../test/helpers/history.js';
import { httpGet, type HttpResponse } from '../test/helpers/http.js';
import { flag, freePort, freePortRange, median, quantile, ROOT } from './common.js';

/** One GET on a fresh connection (as Prometheus' first scrape; it then keeps the connection alive). */
export function scrape(port: number, path = '/metrics'): Promise<HttpResponse> {
  return httpGet(port, path, { freshConnection: true });
}

export interface RealRun {
  coordinatorMetricsPort: number;
  /** Worker i's /metrics port (base + i); meaningful only with metrics on. */
  workerMetricsPort(i: number): number;
  /** Resolves when the coordinator exits; rejects on a non-zero exit. */
  finished: Promise<void>;
  /** Per-step global samples/s from the run's history.jsonl (coordinator wall time order → every step-done). */
  stepSamplesPerSec(): number[];
  /** The coordinator's final JSON summary line. */
  summary(): { samplesPerSec: number; wallSeconds: number };
  kill(): void;
  cleanup(): void;
}

/**
 * A real run: `mnist-ddp coordinator` + `workers` × `mnist-ddp worker` (NODE_APP_INSTANCE=i, metrics on base + i,
 * or `--no-metrics`), cnn on wasm, 1 epoch of `trainSubset` samples, no validation, stopped after `maxSteps`.
 */
export async function startRealRun(o: { workers: number; metrics: boolean; trainSubset: number; maxSteps: number; seed?: number }): Promise<RealRun> {
  const dir = mkdtempSync(join(tmpdir(), 'mnistddp-bench-metrics-'));
  const [control, coordinatorMetricsPort, workerBase] = [await freePort(), await freePort(), await freePortRange(o.workers)];
  const coordinator = startCli('coordinator', [
    'coordinator', '--bind', `tcp://127.0.0.1:${control}`, '--min-workers', String(o.workers), '--metrics-host', '127.0.0.1',
    '--coordinator-metrics-port', String(coordinatorMetricsPort), '--run-dir', join(dir, 'run'), '--train-subset', String(o.trainSubset),
    '--epochs', '1', '--max-steps', String(o.maxSteps), '--warmup-steps', '0', '--validation-size', '0', '--digest-every', '0',
    '--backend', 'wasm', '--no-report', '--json', '--seed', String(o.seed ?? 1),
  ], { cwd: ROOT, keepChars: 4_000 });
  const processes: BackgroundProcess[] = [coordinator];
  for (let i = 0; i < o.workers; i++) {
    processes.push(startCli(`worker ${i}`, [
      'worker', '--coordinator', `tcp://127.0.0.1:${control}`, '--backend', 'wasm', '--metrics-host', '127.0.0.1',
      ...(o.metrics ? ['--metrics-port', String(workerBase)] : ['--no-metrics']),
    ], { cwd: ROOT, keepChars: 4_000, env: { NODE_APP_INSTANCE: String(i) } }));
  }
  const finished = coordinator.exited.then((code) => {
    if (code !== 0) throw new Error(`coordinator exited with ${code}${processes.map((p) => `\n--- ${p.name}:\n${p.stderr()}`).join('')}`);
  });
  return {
    coordinatorMetricsPort,
    workerMetricsPort: (i) => workerBase + i,
    finished,
    stepSamplesPerSec: () => readSteps(join(dir, 'run')).map((r) => r.samplesPerSec),
    summary: () => JSON.parse(coordinator.stdout().trim().split('\n').pop() ?? '{}') as { samplesPerSec: number; wallSeconds: number },
    kill: () => processes.forEach((p) => void p.stop(0)),
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** Scrapes `port` every `intervalMs` until stop(); the first successful scrape resolves `ready`. */
export function scrapeLoop(port: number, intervalMs: number): { ready: Promise<void>; stop(): Promise<{ ms: number[]; bytes: number; errors: number }> } {
  const ms: number[] = [];
  let bytes = 0;
  let errors = 0;
  let running = true;
  let markReady: () => void = () => {};
  const ready = new Promise<void>((r) => (markReady = r));
  const loop = (async () => {
    while (running) {
      const next = performance.now() + intervalMs;
      try {
        const r = await scrape(port);
        if (r.status === 200) {
          ms.push(r.ms);
          bytes = r.bytes;
          markReady();
        }
      } catch {
        errors++; // not listening yet, or gone at the end of the run
      }
      await new Promise((r) => setTimeout(r, Math.max(0, next - performance.now())));
    }
  })();
  return {
    ready,
    async stop() {
      running = false;
      await loop;
      return { ms, bytes, errors };
    },
  };
}

async function main(): Promise<void> {
  const workers = Number(flag('workers', '2'));
  const intervalMs = Number(flag('interval-ms', '100'));
  const steps = Number(flag('steps', '150'));
  const run = await startRealRun({ workers, metrics: true, trainSubset: 60_000, maxSteps: steps });
  try {
    const worker = scrapeLoop(run.workerMetricsPort(0), intervalMs);
    const coordinator = scrapeLoop(run.coordinatorMetricsPort, intervalMs);
    await run.finished;
    const [w, c] = [await worker.stop(), await coordinator.stop()];
    const row = (name: string, r: { ms: number[]; bytes: number }) => ({
      target: name, scrapes: r.ms.length, bytes: r.bytes,
      p50Ms: +quantile(r.ms, 0.5).toFixed(2), p99Ms: +quantile(r.ms, 0.99).toFixed(2), maxMs: +Math.max(...r.ms).toFixed(2), meanMs: +(r.ms.reduce((a, b) => a + b, 0) / r.ms.length).toFixed(2),
    });
    const result = { workers, intervalMs, steps, worker0: row('worker 0', w), coordinator: row('coordinator', c), stepSamplesPerSecP50: +median(run.stepSamplesPerSec().slice(5)).toFixed(1) };
    if (process.argv.includes('--json')) process.stdout.write(`${JSON.stringify(result)}\n`);
    else {
      process.stdout.write(`scrape latency during a real ${workers}-worker run (${steps} steps, one GET per ${intervalMs} ms, fresh connection each):\n`);
      for (const r of [result.worker0, result.coordinator]) {
        process.stdout.write(`  ${r.target.padEnd(12)} ${r.scrapes} scrapes of ${r.bytes} B: p50 ${r.p50Ms} ms, p99 ${r.p99Ms} ms, max ${r.maxMs} ms\n`);
      }
    }
  } finally {
    run.kill();
    run.cleanup();
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) await main();
