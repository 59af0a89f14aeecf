import { spawn } from 'node:child_process';
import { Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { createWorkerMetrics, startThreadedMetricsServer, type MetricsServer } from '../../src/shared/metrics/index.js';
import { httpGet } from '../helpers/http.js';
import { StopPolling, until } from '../helpers/poll.js';

// The /metrics server the worker and coordinator processes actually run (issue #5: "A /metrics scrape answers
// within 50 ms", also while the process is inside a synchronous training step). What any server must do (healthz,
// 404, 405, a port in use, scrape latency, promtool) is in test/integration/metrics.test.ts, against this server;
// here is what is particular to its thread.

const servers: MetricsServer[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

describe('threaded /metrics server', () => {
  it('publish() hands a changed registry to the server thread', async () => {
    const registry = new Registry();
    const metrics = createWorkerMetrics(registry, { defaultMetrics: false });
    metrics.loss.set(0.25);
    const server = await startThreadedMetricsServer({ registry, host: '127.0.0.1', port: 0, minIntervalMs: 0 });
    servers.push(server);
    const body = async (): Promise<string> => (await httpGet(server.port, '/metrics')).body;
    await until('the first published body', async () => (/^mnistddp_loss 0\.25$/m.test(await body()) ? true : undefined), 5_000);
    metrics.loss.set(0.5);
    server.publish();
    await until('the body published after the change', async () => (/^mnistddp_loss 0\.5$/m.test(await body()) ? true : undefined), 5_000);
  });

  it('starts its thread from the compiled module too (dist/, as the shipped processes run it; issue #12)', async () => {
    // dist/ is built by test/helpers/global-setup.ts before any test.
    const dist = (await import(new URL('../../dist/shared/metrics/index.js', import.meta.url).href)) as typeof import('../../src/shared/metrics/index.js');
    const registry = new Registry();
    dist.createWorkerMetrics(registry, { defaultMetrics: false }).loss.set(0.75);
    const server = await dist.startThreadedMetricsServer({ registry, host: '127.0.0.1', port: 0, minIntervalMs: 0 });
    servers.push(server);
    expect((await httpGet(server.port, '/healthz')).body).toBe('ok\n');
    await until('the published body', async () => (/^mnistddp_loss 0\.75$/m.test((await httpGet(server.port, '/metrics')).body) ? true : undefined), 5_000);
  });

  it('answers while the main thread is blocked by synchronous work (the response ends before the block does)', async () => {
    const registry = new Registry();
    createWorkerMetrics(registry, { defaultMetrics: false });
    const server = await startThreadedMetricsServer({ registry, host: '127.0.0.1', port: 0 });
    servers.push(server);
    // The scrape runs in a child process, so only the server thread can answer while this thread spins. The child
    // starts, says "ready", scrapes when told "go", and prints the status and the wall-clock time (same clock as this
    // process) at which the response ended.
    const script = `console.log('ready');process.stdin.once('data',()=>require('http').get('http://127.0.0.1:${server.port}/metrics',r=>{r.resume();r.on('end',()=>{console.log(r.statusCode+' '+Date.now());process.exit(0)})}))`;
    const p = spawn(process.execPath, ['-e', script]);
    let out = '';
    let exitCode: number | null | undefined;
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<void>((resolve, reject) => {
      p.on('exit', (code) => {
        exitCode = code;
        resolve();
      });
      p.on('error', reject);
    });
    await until('the scrape child to say ready', () => {
      if (exitCode !== undefined) throw new StopPolling(`the scrape child exited (${exitCode}) before it was ready: ${JSON.stringify(out)}`);
      return out.startsWith('ready\n') ? true : undefined;
    }, 10_000);
    // A synchronous "training step", long enough for the child's scrape on a loaded machine. The "go" leaves in a
    // synchronous pipe write before the spin starts.
    p.stdin.write('go\n');
    const spinUntil = performance.now() + 2_500;
    while (performance.now() < spinUntil) { /* busy */ }
    const spinEnd = Date.now();
    await exited;
    const [status, responseEnd] = out.slice('ready\n'.length).trim().split(' ').map(Number);
    expect(status, `child printed ${JSON.stringify(out)}`).toBe(200);
    // A server on this thread could not have finished a response during the spin. (It cannot have ended before the
    // spin either: the child asks only after "go", which is written just before the spin starts.)
    expect(responseEnd).toBeLessThan(spinEnd);
  });
});
