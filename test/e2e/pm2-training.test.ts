import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { expectEverySampleOnce } from '../helpers/exactly-once.js';
import { readRecords, readSteps, type StepRecord } from '../helpers/history.js';
import { freePort, freePortRange } from '../helpers/net.js';
import { runPm2, stopPm2 } from '../helpers/pm2.js';
import { untilRecorded } from '../helpers/run-dir.js';

// Issue #5: `pm2 start ecosystem.config.js` runs a real training run; `pm2 scale worker 3` and back to 2 during
// it; the run completes with exactly-once sample accounting (every epoch position covered once, in order).
// Issue #14: pm2 restarts a SIGKILLed coordinator, which continues its run from the latest periodic checkpoint.

const REPO = fileURLToPath(new URL('../..', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'mnist-ddp-pm2-'));
const runDir = join(dir, 'run');
// Five epochs of 16 000 (about 15 s of training here): the scale up, its five steps, the scale down and a step after
// it all happen inside the run at any training speed we have had (one epoch of 24 000 lasted under 5 s, close to
// the ~4 s those events take).
const TRAIN_SAMPLES = 16_000;
const EPOCHS = 5;

let env: NodeJS.ProcessEnv = {};
const pm2 = (...args: string[]): Promise<string> => runPm2({ cwd: REPO, env }, ...args);
const steps = (): StepRecord[] => readSteps(runDir);
const lastSteps = (): string => `; last steps: ${JSON.stringify(steps().slice(-3))}`;

afterAll(() => stopPm2({ cwd: REPO, env }));

describe('pm2 ecosystem with elastic scaling', () => {
  it('scales 2 → 3 → 2 during a run and keeps exactly-once sample accounting', async () => {
    // Worker i serves /metrics on base + i, and the run scales to 3 workers: the base needs 3 free ports in a row.
    const [control, metrics, workerMetrics] = await Promise.all([freePort(), freePort(), freePortRange(3)]);
    env = {
      ...process.env,
      PM2_HOME: join(dir, 'pm2'),
      MNIST_DDP_WORKERS: '2',
      MNIST_DDP_COORDINATOR: `tcp://127.0.0.1:${control}`,
      MNIST_DDP_COORDINATOR_METRICS_PORT: String(metrics),
      MNIST_DDP_METRICS_PORT: String(workerMetrics),
      MNIST_DDP_TARGETS_FILE: join(dir, 'targets.json'),
      MNIST_DDP_RUN_DIR: runDir,
      MNIST_DDP_TRAIN_SUBSET: String(TRAIN_SAMPLES),
      MNIST_DDP_EPOCHS: String(EPOCHS),
      MNIST_DDP_VALIDATION_SIZE: '1000',
      MNIST_DDP_BACKEND: 'wasm',
      MNIST_DDP_REPORT: 'false',
      MNIST_DDP_LOG_LEVEL: 'info',
    };
    await pm2('start', 'ecosystem.config.js');
    await untilRecorded(runDir, 'training with 2 workers', () => (steps().some((s) => s.workers === 2) ? true : undefined), { deadlineMs: 60_000, describeLast: lastSteps });
    await pm2('scale', 'worker', '3');
    const three = await untilRecorded(runDir, 'a generation with 3 workers', () => steps().find((s) => s.workers === 3), { deadlineMs: 60_000, describeLast: lastSteps });
    await untilRecorded(runDir, 'a few steps with 3 workers', () => (steps().filter((s) => s.workers === 3).length >= 5 ? true : undefined), { deadlineMs: 30_000, describeLast: lastSteps });
    await pm2('scale', 'worker', '2');
    const back = await untilRecorded(runDir, 'back to 2 workers in a later generation', () => steps().find((s) => s.workers === 2 && s.generation > three.generation), { deadlineMs: 60_000, describeLast: lastSteps });
    await untilRecorded(runDir, 'the run to finish', () => (existsSync(join(runDir, 'eval.json')) ? true : undefined), { deadlineMs: 180_000, describeLast: lastSteps });

    const all = steps();
    expect(back.generation).toBeGreaterThan(three.generation);
    expect(new Set(all.map((s) => s.workers))).toEqual(new Set([2, 3]));
    expectEverySampleOnce(all, TRAIN_SAMPLES, EPOCHS);
    const evaluation = JSON.parse(readFileSync(join(runDir, 'eval.json'), 'utf8')) as { accuracy: number; count: number };
    expect(evaluation.count).toBe(10_000);
    expect(evaluation.accuracy).toBeGreaterThan(0.9);
    const targets = JSON.parse(readFileSync(join(dir, 'targets.json'), 'utf8')) as Array<{ labels: { role: string } }>;
    expect(targets.some((t) => t.labels.role === 'coordinator')).toBe(true);
    expect(targets.filter((t) => t.labels.role === 'worker').length).toBeGreaterThanOrEqual(2);
  }, 420_000);

  it('restarts a SIGKILLed coordinator, which resumes the run from its latest periodic checkpoint (issue #14)', async () => {
    const RESTART_SAMPLES = 24_000;
    await stopPm2({ cwd: REPO, env });
    const restartDir = join(dir, 'restart-run');
    const restartSteps = (): StepRecord[] => readSteps(restartDir);
    const last = (): string => `; last steps: ${JSON.stringify(restartSteps().slice(-3))}`;
    const [control, metrics, workerMetrics] = await Promise.all([freePort(), freePort(), freePortRange(2)]);
    env = {
      ...env,
      PM2_HOME: join(dir, 'pm2-restart'),
      MNIST_DDP_COORDINATOR: `tcp://127.0.0.1:${control}`,
      MNIST_DDP_COORDINATOR_METRICS_PORT: String(metrics),
      MNIST_DDP_METRICS_PORT: String(workerMetrics),
      MNIST_DDP_RUN_DIR: restartDir,
      MNIST_DDP_TRAIN_SUBSET: String(RESTART_SAMPLES),
      MNIST_DDP_EPOCHS: '1',
      MNIST_DDP_CHECKPOINT_EVERY: '10',
    };
    await pm2('start', 'ecosystem.config.js');
    // Its pid first (`pm2 jlist` takes about a second): the kill must land mid-run, within moments of the 14th step.
    const before = JSON.parse(await pm2('jlist')) as Array<{ name: string; pid: number; pm2_env: { restart_time: number } }>;
    const coordinator = before.find((p) => p.name === 'coordinator')!;
    await untilRecorded(restartDir, 'a periodic checkpoint and a few steps after it', () => (restartSteps().length >= 14 ? true : undefined), { deadlineMs: 90_000, describeLast: last });
    process.kill(coordinator.pid, 'SIGKILL');
    await untilRecorded(restartDir, 'the resumed run to finish', () => (existsSync(join(restartDir, 'eval.json')) ? true : undefined), { deadlineMs: 180_000, describeLast: last });

    const after = JSON.parse(await pm2('jlist')) as typeof before;
    expect(after.find((p) => p.name === 'coordinator')!.pm2_env.restart_time).toBeGreaterThan(coordinator.pm2_env.restart_time);
    // The redone steps follow a `rewind` record; readSteps drops what it supersedes, so each step counts once.
    expect(readRecords(restartDir).some((r) => r.type === 'rewind')).toBe(true);
    expectEverySampleOnce(restartSteps(), RESTART_SAMPLES);
    const evaluation = JSON.parse(readFileSync(join(restartDir, 'eval.json'), 'utf8')) as { count: number };
    expect(evaluation.count).toBe(10_000);
  }, 360_000);
});
