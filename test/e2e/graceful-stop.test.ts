import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCli, startCli } from '../helpers/cli.js';
import { expectRunAccountedOnce } from '../helpers/exactly-once.js';
import { readSteps } from '../helpers/history.js';
import { untilOutput } from '../helpers/process-output.js';
import { untilRecorded } from '../helpers/run-dir.js';

// SIGTERM is how pm2, Kubernetes and an operator stop a run. The coordinator stops at the next step boundary, writes a
// resumable checkpoint and exits as SIGTERM would (143) with RUN_INTERRUPTED; resuming from it trains every sample
// of the run exactly once.

const SAMPLES = 8000;

describe('a run stopped by SIGTERM', () => {
  it('checkpoints at the next step boundary, exits 143 with RUN_INTERRUPTED, and resumes to every sample once', async () => {
    const runDir = mkdtempSync(join(tmpdir(), 'mnist-ddp-sigterm-'));
    const common = ['--train-subset', String(SAMPLES), '--epochs', '1', '--warmup-steps', '0', '--validation-size', '500', '--seed', '6', '--backend', 'wasm', '--no-report', '--json'];
    const trainer = startCli('trainer', ['train', '--workers', '2', ...common, '--run-dir', runDir]);
    try {
      await untilRecorded(runDir, '5 steps', () => (readSteps(runDir).length >= 5 ? true : undefined), { deadlineMs: 90_000, describeLast: () => trainer.output().slice(-2000) });
      trainer.child.kill('SIGTERM');
      const code = await trainer.exited;
      expect(code, trainer.output().slice(-3000)).toBe(143);
    } finally {
      await trainer.stop(0);
    }
    expect(trainer.stderr()).toMatch(/error \[RUN_INTERRUPTED\]: stopped by SIGTERM after step (\d+), with a checkpoint at /);
    const stoppedAt = Number(/after step (\d+)/.exec(trainer.stderr())![1]);
    const state = JSON.parse(readFileSync(join(runDir, 'checkpoint', 'state.json'), 'utf8')) as { globalStep: number };
    // The checkpoint holds every step recorded: the ones in flight at the signal committed before it was written.
    expect(state.globalStep).toBe(stoppedAt);
    expect(readSteps(runDir)).toHaveLength(stoppedAt);
    expect(existsSync(join(runDir, 'eval.json')), 'no final evaluation: the run is unfinished').toBe(false);

    const resumed = await runCli(['train', '--workers', '2', ...common, '--resume', join(runDir, 'checkpoint')], { timeoutMs: 150_000 });
    expect(resumed.code, resumed.stderr.slice(-3000)).toBe(0);
    expectRunAccountedOnce(runDir, SAMPLES, 0.8);
  }, 300_000);

  it('an idle --stay-alive worker (no coordinator to wait for) leaves at once on SIGTERM, exit 0', async () => {
    // Port 9 (discard) on loopback: nothing listens, so the worker waits for its coordinator, as under pm2 before the run.
    const worker = startCli('idle worker', ['worker', '--coordinator', 'tcp://127.0.0.1:9', '--stay-alive', '--no-metrics'], { env: { MNIST_DDP_LOG_LEVEL: 'info' } });
    try {
      await untilOutput(worker, /advertising the ring inbox/, 'the worker saying hello', 30_000);
      const t0 = Date.now();
      worker.child.kill('SIGTERM');
      expect(await worker.exited, worker.output().slice(-2000)).toBe(0);
      expect(Date.now() - t0, 'SIGTERM → exit (ms)').toBeLessThan(5_000);
      expect(worker.stderr()).toMatch(/leaving now \(not in a ring\)/);
    } finally {
      await worker.stop(0);
    }
  }, 60_000);
});
