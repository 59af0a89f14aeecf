import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

// Issue #5: `pm2 start ecosystem.config.js` runs a real training run; `pm2 scale worker 3` and back to 2 during
// it; the run completes with exactly-once sample accounting (every epoch position covered once, in order).

const REPO = fileURLToPath(new URL('../..', import.meta.url));
const PM2_BIN = join(REPO, 'node_modules', 'pm2', 'bin', 'pm2');
const dir = mkdtempSync(join(tmpdir(), 'mnist-ddp-pm2-'));
const runDir = join(dir, 'run');
const TRAIN_SAMPLES = 24_000;

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

let env: NodeJS.ProcessEnv = {};

function pm2(...args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [PM2_BIN, ...args], { cwd: REPO, env, timeout: 60_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`pm2 ${args.join(' ')} failed: ${err.message}\n${stdout}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

interface StepRecord { type: string; step: number; epoch: number; cursor: number; count: number; workers: number; generation: number }

function steps(): StepRecord[] {
  const file = join(runDir, 'history.jsonl');
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as StepRecord).filter((r) => r.type === 'step');
}

async function until<T>(what: string, probe: () => T | undefined, deadlineMs: number): Promise<T> {
  const end = Date.now() + deadlineMs;
  while (Date.now() < end) {
    const value = probe();
    if (value !== undefined) return value;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`timed out after ${deadlineMs} ms waiting for ${what}; last steps: ${JSON.stringify(steps().slice(-3))}`);
}

afterAll(async () => {
  await pm2('delete', 'all').catch(() => undefined);
  await pm2('kill').catch(() => undefined);
});

describe('pm2 ecosystem with elastic scaling', () => {
  it('scales 2 → 3 → 2 during a run and keeps exactly-once sample accounting', async () => {
    const [control, metrics, workerMetrics] = await Promise.all([freePort(), freePort(), freePort()]);
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
      MNIST_DDP_EPOCHS: '1',
      MNIST_DDP_VALIDATION_SIZE: '1000',
      MNIST_DDP_BACKEND: 'wasm',
      MNIST_DDP_REPORT: 'false',
      MNIST_DDP_LOG_LEVEL: 'info',
    };
    await pm2('start', 'ecosystem.config.js');
    await until('training with 2 workers', () => (steps().some((s) => s.workers === 2) ? true : undefined), 60_000);
    await pm2('scale', 'worker', '3');
    const three = await until('a generation with 3 workers', () => steps().find((s) => s.workers === 3), 60_000);
    await until('a few steps with 3 workers', () => (steps().filter((s) => s.workers === 3).length >= 5 ? true : undefined), 30_000);
    await pm2('scale', 'worker', '2');
    const back = await until('back to 2 workers in a later generation', () => steps().find((s) => s.workers === 2 && s.generation > three.generation), 60_000);
    await until('the run to finish', () => (existsSync(join(runDir, 'eval.json')) ? true : undefined), 180_000);

    const all = steps();
    expect(back.generation).toBeGreaterThan(three.generation);
    expect(new Set(all.map((s) => s.workers))).toEqual(new Set([2, 3]));
    // Exactly once: the steps tile [0, TRAIN_SAMPLES) of the epoch order without gaps or overlaps.
    let expected = 0;
    for (const s of all) {
      expect(s.cursor, `step ${s.step}`).toBe(expected);
      expected += s.count;
    }
    expect(expected).toBe(TRAIN_SAMPLES);
    const evaluation = JSON.parse(readFileSync(join(runDir, 'eval.json'), 'utf8')) as { accuracy: number; count: number };
    expect(evaluation.count).toBe(10_000);
    expect(evaluation.accuracy).toBeGreaterThan(0.9);
    const targets = JSON.parse(readFileSync(join(dir, 'targets.json'), 'utf8')) as Array<{ labels: { role: string } }>;
    expect(targets.some((t) => t.labels.role === 'coordinator')).toBe(true);
    expect(targets.filter((t) => t.labels.role === 'worker').length).toBeGreaterThanOrEqual(2);
  }, 420_000);
});
