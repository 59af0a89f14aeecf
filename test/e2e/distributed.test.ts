import { execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { lastJson, runCli } from '../helpers/cli.js';

// Issue #4, on real processes: a coordinator and worker processes talking over ZeroMQ.

interface Summary { testAccuracy: number; epochs: number; samplesPerSec: number }

const tmp = () => mkdtempSync(join(tmpdir(), 'mnist-ddp-e2e-'));

describe('distributed training (real processes)', () => {
  it('2 workers × batch 64 reach the single-process accuracy (batch 128) within 0.3 %', async () => {
    const common = ['--train-subset', '8000', '--epochs', '1', '--warmup-steps', '0', '--validation-size', '1000', '--seed', '3', '--backend', 'wasm', '--json', '--no-report'];
    const single = await runCli(['train', ...common, '--batch-size', '128', '--run-dir', tmp()]);
    expect(single.code, single.stderr).toBe(0);
    const ddp = await runCli(['train', ...common, '--batch-size', '64', '--workers', '2', '--run-dir', tmp()]);
    expect(ddp.code, ddp.stderr).toBe(0);
    const a = lastJson<Summary>(single.stdout);
    const b = lastJson<Summary>(ddp.stdout);
    expect(a.testAccuracy).toBeGreaterThan(0.9);
    expect(Math.abs(a.testAccuracy - b.testAccuracy)).toBeLessThanOrEqual(0.003);
  });

  it('a worker that dies fails the run fast with an error naming the missing rank (no hang)', async () => {
    const RING_TIMEOUT_MS = 3_000;
    let killedAt: number | undefined;
    const started = Date.now();
    const result = await runCli(['train', '--workers', '3', '--epochs', '1', '--backend', 'wasm', '--json', '--no-report', '--run-dir', tmp()], {
      env: { MNIST_DDP_RING_TIMEOUT_MS: String(RING_TIMEOUT_MS) },
      timeoutMs: 90_000,
      onSpawn: (child) => {
        const poll = setInterval(() => {
          let pids: string[] = [];
          try {
            pids = execFileSync('pgrep', ['-P', String(child.pid)], { encoding: 'utf8' }).trim().split('\n').filter(Boolean);
          } catch { /* no children yet */ }
          // Once all three worker processes are up and training has had a moment, kill one. pgrep lists them by
          // pid, not by rank (ranks follow the order their hellos arrive), so which rank dies is not known here.
          if (pids.length === 3 && Date.now() - started > 6000 && killedAt === undefined) {
            killedAt = Date.now();
            process.kill(Number(pids[1]), 'SIGKILL');
            clearInterval(poll);
          }
        }, 200);
        child.on('exit', () => clearInterval(poll));
      },
    });
    const exitedAt = Date.now();
    expect(killedAt, 'no worker was killed (the run ended or never started three workers)').toBeDefined();
    expect(result.code).not.toBe(0);
    expect(result.stderr).toMatch(/error \[(PEER_LOST|PEER_TIMEOUT)\]/);
    expect(result.stderr).toMatch(/rank [0-9]/);
    // Survivors give up on the dead neighbour after the ring timeout; the margin covers the coordinator's reaction
    // and the processes' shutdown on a loaded 2-core machine, and is far below a hang.
    expect(exitedAt - killedAt!, 'kill → exit (ms)').toBeLessThan(RING_TIMEOUT_MS + 17_000);
  });
});
