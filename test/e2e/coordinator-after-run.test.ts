import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { startCli, type BackgroundProcess } from '../helpers/cli.js';
import { loopbackCoordinator } from '../helpers/net.js';
import { untilOutput } from '../helpers/process-output.js';

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
    const { endpoint, metricsPort: metrics, flags } = await loopbackCoordinator();
    const coordinator = startCli('coordinator', [
      'coordinator', ...flags, '--min-workers', '1', '--model', 'mlp',
      '--batch-size', '32', '--train-subset', '640', '--epochs', '1', '--validation-size', '200', '--warmup-steps', '0',
      '--no-report', '--run-dir', runDir, '--no-exit-when-done',
    ], { env: { MNIST_DDP_LOG_LEVEL: 'info' } });
    processes.push(coordinator, startCli('worker', ['worker', '--coordinator', endpoint, '--no-metrics']));

    // The event: the coordinator says it is serving after its run (exiting first rejects, with its output).
    await untilOutput(coordinator, /run finished; serving \/metrics until stopped/, 'the line saying it serves after the run', 100_000);
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
