import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { startCli, type BackgroundProcess } from '../helpers/cli.js';
import { expectRunAccountedOnce } from '../helpers/exactly-once.js';
import { readSteps, type StepRecord } from '../helpers/history.js';
import { freePort } from '../helpers/net.js';
import { untilRecorded } from '../helpers/run-dir.js';

// Issue #5's elastic run against the harshest leave: a worker is SIGKILLed mid-epoch (no goodbye). The survivors'
// ring times out, the coordinator drops the silent rank, re-forms the ring with the rest, restores a survivor's
// state and orders the unfinished steps again — with step orders pipelined, so an order queued behind the failed
// one must be dropped, not run twice. The run must finish with every sample used exactly once.

const dir = mkdtempSync(join(tmpdir(), 'mnist-ddp-elastic-'));
const runDir = join(dir, 'run');
const TRAIN_SAMPLES = 12_000;
const processes: BackgroundProcess[] = [];

function start(name: string, args: string[]): BackgroundProcess {
  const proc = startCli(name, args);
  processes.push(proc);
  return proc;
}

const steps = (): StepRecord[] => readSteps(runDir);

afterAll(async () => {
  await Promise.all(processes.map((p) => p.stop(0)));
});

describe('elastic run, worker killed', () => {
  it('re-forms the ring without a SIGKILLed worker, redoes its step, and uses every sample exactly once', async () => {
    const [control, metrics] = await Promise.all([freePort(), freePort()]);
    const coordinator = start('coordinator', [
      'coordinator', '--bind', `tcp://127.0.0.1:${control}`, '--min-workers', '3', '--coordinator-metrics-port', String(metrics),
      '--heartbeat-timeout-ms', '2000', '--train-subset', String(TRAIN_SAMPLES), '--epochs', '1', '--validation-size', '1000',
      '--backend', 'wasm', '--no-report', '--run-dir', runDir,
    ]);
    const workers = [0, 1, 2].map((i) => start(`worker ${i}`, ['worker', '--coordinator', `tcp://127.0.0.1:${control}`, '--backend', 'wasm', '--ring-timeout-ms', '2000', '--no-metrics']));

    await untilRecorded(runDir, '10 steps with 3 workers', () => (steps().filter((s) => s.workers === 3).length >= 10 ? true : undefined), {
      deadlineMs: 60_000,
      describeLast: () => `\n${coordinator.stderr().slice(-2000)}`,
    });
    workers[1]!.child.kill('SIGKILL');
    const code = await Promise.race([coordinator.exited, new Promise<'hung'>((r) => setTimeout(() => r('hung'), 150_000))]);
    expect(code, coordinator.stderr().slice(-3000)).toBe(0);

    const all = steps();
    const before = all.filter((s) => s.workers === 3);
    const after = all.filter((s) => s.workers === 2);
    expect(before.length).toBeGreaterThanOrEqual(10);
    expect(after.length).toBeGreaterThan(0);
    expect(Math.min(...after.map((s) => s.generation))).toBeGreaterThan(Math.max(...before.map((s) => s.generation)));
    // Exactly once, in what the replicas applied as well as in what the coordinator recorded.
    expectRunAccountedOnce(runDir, TRAIN_SAMPLES, 0.85);
    // Worker ids follow hello order, not spawn order: exactly one worker is reported gone.
    expect(coordinator.stderr().match(/rank \d \(worker \d\) is gone/g)).toHaveLength(1);
  }, 240_000);
});
