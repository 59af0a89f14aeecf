import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { lastJson, runCli } from '../helpers/cli.js';
import { expectRunAccountedOnce } from '../helpers/exactly-once.js';
import { logLines } from '../helpers/process-output.js';

// Issue #16 item 4, on real processes: `train --workers 3` with recursive doubling (3 is no power of two, so rank 1
// folds into rank 0) trains as the ring does, every sample once; the coordinator names the collective it chose.

interface Summary { testAccuracy: number }

const tmp = (): string => mkdtempSync(join(tmpdir(), 'mnist-ddp-collective-'));
const SAMPLES = 6000;
const common = ['train', '--workers', '3', '--train-subset', String(SAMPLES), '--epochs', '1', '--warmup-steps', '0', '--validation-size', '1000', '--seed', '4',
  '--backend', 'wasm', '--json', '--no-report'];

describe('collective choice (real processes)', () => {
  it('3 workers train with recursive doubling as with the ring: every sample once, the same accuracy within a point', async () => {
    const results: Record<string, number> = {};
    for (const collective of ['doubling', 'ring'] as const) {
      const runDir = tmp();
      const run = await runCli([...common, '--collective', collective, '--run-dir', runDir], { env: { MNIST_DDP_LOG_LEVEL: 'info' }, timeoutMs: 150_000 });
      expect(run.code, run.stderr.slice(-3000)).toBe(0);
      const formed = logLines(run.stderr, /^ring formed/);
      expect(formed.map((f) => f.collective), 'the collective each generation used').toEqual([collective]);
      expectRunAccountedOnce(runDir, SAMPLES, 0.85);
      results[collective] = lastJson<Summary>(run.stdout).testAccuracy;
    }
    expect(Math.abs(results.doubling! - results.ring!), JSON.stringify(results)).toBeLessThanOrEqual(0.01);
  }, 320_000);

  it('--collective auto takes doubling for cnn (136 KiB) and the ring above --doubling-max-kib; doubling with --compress is refused', async () => {
    const quick = ['train', '--workers', '2', '--train-subset', '2000', '--max-steps', '2', '--backend', 'wasm', '--no-report'];
    for (const [flags, expected] of [[[], 'doubling'], [['--doubling-max-kib', '64'], 'ring']] as const) {
      const run = await runCli([...quick, ...flags, '--run-dir', tmp()], { env: { MNIST_DDP_LOG_LEVEL: 'info' } });
      expect(run.code, run.stderr.slice(-3000)).toBe(0);
      expect(logLines(run.stderr, /^ring formed/).map((f) => f.collective), flags.join(' ')).toEqual([expected]);
    }
    const refused = await runCli(['train', '--workers', '2', '--collective', 'doubling', '--compress', 'fp16', '--run-dir', tmp()]);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(/error \[CONFIG_INVALID\]: --compress fp16 compresses the ring's frames, and --collective doubling sends float32/);
  }, 120_000);
});
