/**
 * How fast a live worker answers a Prometheus scrape while it trains (issue: "A /metrics scrape answers within
 * 50 ms"). Starts a real run: a coordinator and `--workers` worker processes (bin/mnist-ddp.js, real ring
 * all-reduce), then GETs worker 0's /metrics every `--interval-ms` from this process until the run ends, and prints
 * p50/p99/max of the scrape latency (request sent → last body byte), plus the body size. The coordinator's /metrics
 * is scraped alongside at the same rate.
 *
 *   npx tsx bench/scrape-latency.ts [--workers 2] [--interval-ms 100] [--steps 150] [--json]
 *
 * Needs a build (`npx tsc -p tsconfig.build.json`). Also exports the run harness bench/metrics-overhead.ts uses.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { flag, freePort, freePortRange, median, ROOT } from './common.js';

const BIN = join(ROOT, 'bin', 'mnist-ddp.js');

export function quantile(values: readonly number[], q: number): number {
  const s = [...values].sort((a, b) => a - b);
  if (s.length === 0) return Number.NaN;
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))]!;
}

/** One GET on a fresh connection (as Prometheus' first scrape; it then keeps the connection alive). */
export function scrape(port: number, path = '/metrics', timeoutMs = 5_000): Promise<{ ms: number; bytes: number; status: number }> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const req = request({ host: '127.0.0.1', port, path, timeout: timeoutMs, agent: false }, (res) => {
      let bytes = 0;
      res.on('data', (c: Buffer) => (bytes += c.length));
      res.on('end', () => resolve({ ms: performance.now() - t0, bytes, status: res.statusCode ?? 0 }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${path} on :${port} timed out`)));
    req.on('error', reject);
    req.end();
  });
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
  const env = { ...process.env, MNIST_DDP_LOG_LEVEL: 'warn' };
  const children: ChildProcess[] = [];
  let stdout = '';
  let stderr = '';
  const coordinator = spawn(process.execPath, [
    BIN, 'coordinator', '--bind', `tcp://127.0.0.1:${control}`, '--min-workers', String(o.workers), '--metrics-host', '127.0.0.1',
    '--coordinator-metrics-port', String(coordinatorMetricsPort), '--run-dir', join(dir, 'run'), '--train-subset', String(o.trainSubset),
    '--epochs', '1', '--max-steps', String(o.maxSteps), '--warmup-steps', '0', '--validation-size', '0', '--digest-every', '0',
    '--backend', 'wasm', '--no-report', '--json', '--seed', String(o.seed ?? 1),
  ], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  coordinator.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
  coordinator.stderr.on('data', (c: Buffer) => (stderr = (stderr + c.toString()).slice(-4_000)));
  children.push(coordinator);
  for (let i = 0; i < o.workers; i++) {
    children.push(spawn(process.execPath, [
      BIN, 'worker', '--coordinator', `tcp://127.0.0.1:${control}`, '--backend', 'wasm', '--metrics-host', '127.0.0.1',
      ...(o.metrics ? ['--metrics-port', String(workerBase)] : ['--no-metrics']),
    ], { cwd: ROOT, env: { ...env, NODE_APP_INSTANCE: String(i) }, stdio: ['ignore', 'ignore', 'inherit'] }));
  }
  const finished = new Promise<void>((resolve, reject) => {
    coordinator.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`coordinator exited with ${code}\n${stderr}`))));
  });
  return {
    coordinatorMetricsPort,
    workerMetricsPort: (i) => workerBase + i,
    finished,
    stepSamplesPerSec() {
      const lines = readFileSync(join(dir, 'run', 'history.jsonl'), 'utf8').trim().split('\n');
      return lines.map((l) => JSON.parse(l) as { type: string; samplesPerSec: number }).filter((r) => r.type === 'step').map((r) => r.samplesPerSec);
    },
    summary: () => JSON.parse(stdout.trim().split('\n').pop() ?? '{}') as { samplesPerSec: number; wallSeconds: number },
    kill: () => children.forEach((c) => c.exitCode === null && c.signalCode === null && c.kill('SIGKILL')),
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
