import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { startCli, type BackgroundProcess } from '../helpers/cli.js';
import { freePort } from '../helpers/net.js';

/**
 * What a coordinator does after its run, on real processes. Under pm2 (`--no-exit-when-done`) it must keep serving
 * /metrics: a process that exits is started again by pm2 with the same run directory. Its metrics server runs on its
 * own thread, which does not hold the process, so without an explicit hold the coordinator exited right after
 * saying it was serving.
 */
const processes: BackgroundProcess[] = [];

afterAll(async () => {
  await Promise.all(processes.map((p) => p.stop(0)));
});

describe('a coordinator after its run', () => {
  it('--no-exit-when-done: keeps serving /metrics and running after the run, until it is stopped', async () => {
    const runDir = join(mkdtempSync(join(tmpdir(), 'mnist-ddp-after-run-')), 'run');
    const [control, metrics] = await Promise.all([freePort(), freePort()]);
    const endpoint = `tcp://127.0.0.1:${control}`;
    const coordinator = startCli('coordinator', [
      'coordinator', '--bind', endpoint, '--min-workers', '1', '--coordinator-metrics-port', String(metrics), '--model', 'mlp',
      '--batch-size', '32', '--train-subset', '640', '--epochs', '1', '--validation-size', '200', '--warmup-steps', '0',
      '--no-report', '--run-dir', runDir, '--no-exit-when-done',
    ], { env: { MNIST_DDP_LOG_LEVEL: 'info' } });
    processes.push(coordinator, startCli('worker', ['worker', '--coordinator', endpoint, '--no-metrics']));

    // The event: the coordinator says it is serving after its run (or exits first, which fails the test).
    const serving = new Promise<'serving'>((resolve) => {
      coordinator.child.stderr!.on('data', () => {
        if (coordinator.stderr().includes('run finished; serving /metrics until stopped')) resolve('serving');
      });
    });
    const outcome = await Promise.race([serving, coordinator.exited.then((code) => `exited with ${code}`)]);
    expect(outcome, coordinator.stderr().slice(-3000)).toBe('serving');
    expect(existsSync(join(runDir, 'eval.json'))).toBe(true);

    const health = await fetch(`http://127.0.0.1:${metrics}/healthz`);
    expect(health.status).toBe(200);
    const body = await (await fetch(`http://127.0.0.1:${metrics}/metrics`)).text();
    expect(body).toContain('mnistddp_');
    expect(coordinator.running()).toBe(true);

    await coordinator.stop(3_000);
    expect(coordinator.running()).toBe(false);
  }, 120_000);
});
