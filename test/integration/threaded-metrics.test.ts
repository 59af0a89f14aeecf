import { spawn } from 'node:child_process';
import { request } from 'node:http';
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { isMnistDdpError } from '../../src/shared/errors.js';
import { createWorkerMetrics, startThreadedMetricsServer } from '../../src/shared/metrics.js';

// The /metrics server the worker and coordinator processes actually run (issue #5: "A /metrics scrape answers
// within 50 ms", also while the process is inside a synchronous training step).

function get(port: number, path: string, method = 'GET'): Promise<{ status: number; body: string; ms: number }> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method, timeout: 5000 }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, ms: performance.now() - t0 }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('threaded /metrics server', () => {
  it('serves the published registry, healthz, 404 and 405', async () => {
    const registry = new Registry();
    const metrics = createWorkerMetrics(registry, { defaultMetrics: false });
    metrics.loss.set(0.25);
    const server = await startThreadedMetricsServer({ registry, host: '127.0.0.1', port: 0, minIntervalMs: 0 });
    try {
      server.publish();
      await new Promise((r) => setTimeout(r, 50));
      expect((await get(server.port, '/metrics')).body).toMatch(/^mnistddp_loss 0\.25$/m);
      expect((await get(server.port, '/healthz')).status).toBe(200);
      expect((await get(server.port, '/nope')).status).toBe(404);
      expect((await get(server.port, '/metrics', 'POST')).status).toBe(405);
    } finally {
      await server.close();
    }
  });

  it('answers while the main thread is blocked by synchronous work (well before the block ends)', async () => {
    const registry = new Registry();
    createWorkerMetrics(registry, { defaultMetrics: false });
    const server = await startThreadedMetricsServer({ registry, host: '127.0.0.1', port: 0 });
    try {
      // The scrape runs in a child process, so only the server thread can answer while this thread spins.
      const script = `const t=performance.now();require('http').get('http://127.0.0.1:${server.port}/metrics',r=>{r.resume();r.on('end',()=>console.log(performance.now()-t))})`;
      const child = new Promise<number>((resolve, reject) => {
        const p = spawn(process.execPath, ['-e', script]);
        let out = '';
        p.stdout.on('data', (d: Buffer) => (out += d.toString()));
        p.on('exit', () => resolve(Number(out)));
        p.on('error', reject);
      });
      const until = performance.now() + 1500;
      while (performance.now() < until) { /* a synchronous "training step" */ }
      const ms = await child;
      expect(ms).toBeGreaterThan(0);
      // A server on this thread could not answer before the 1.5 s spin ends. The 50 ms figure itself is measured
      // by bench/scrape-latency.ts; a timed test on a loaded 2-core machine must not pretend to measure it (58 ms
      // was seen here with two test files running in parallel).
      expect(ms).toBeLessThan(500);
    } finally {
      await server.close();
    }
  });

  it('reports a port in use as CONFIG_INVALID naming the port', async () => {
    const first = await startThreadedMetricsServer({ registry: new Registry(), host: '127.0.0.1', port: 0 });
    try {
      const err = await startThreadedMetricsServer({ registry: new Registry(), host: '127.0.0.1', port: first.port }).catch((e: unknown) => e);
      expect(isMnistDdpError(err, 'CONFIG_INVALID')).toBe(true);
      expect((err as Error).message).toContain(String(first.port));
    } finally {
      await first.close();
    }
  });
});
