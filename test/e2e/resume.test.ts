import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { lastJson, runCli, type CliResult } from '../helpers/cli.js';

/**
 * Resume equivalence and a real accuracy bar, on real `mnist-ddp` processes (wasm backend).
 *
 * Run A trains 2 epochs straight through; run B is the same run stopped by --max-steps 50 in the middle of epoch 2
 * (1 200 samples / batch 32 = 38 steps per epoch, so step 50 is cursor 384 of epoch 2) and then resumed from its
 * checkpoint. Weights, optimiser slots, data order and augmentation seeds are all restored from the checkpoint, so
 * B must end with bit-identical weights. Regression: a resumed run used to inherit the saved run's --max-steps and
 * stop before its first step (fixed in "train --resume: take unset operational keys from the new invocation too").
 */
interface TrainSummary {
  testAccuracy: number;
  macroF1: number;
  epochs: number;
  checkpoint: string;
  stoppedEarly: boolean;
}

interface State {
  epoch: number;
  cursor: number;
  globalStep: number;
  weightsDigest: string;
  optimizer: { name: string; step: number };
}

const RUN = ['--train-subset', '1200', '--epochs', '2', '--batch-size', '32', '--validation-size', '200', '--seed', '9', '--backend', 'wasm', '--no-report', '--json'];
/**
 * cnn on 5 000 samples, one epoch, through the whole `train` command. Historical, not re-measured: seeds 1–3 gave
 * 0.958–0.961 test accuracy when this test was written, hence a bar of 0.93.
 */
const ACCURACY_RUN = ['--model', 'cnn', '--train-subset', '5000', '--epochs', '1', '--batch-size', '32', '--warmup-steps', '0', '--validation-size', '0', '--seed', '1', '--backend', 'wasm', '--no-report', '--json'];
const MIN_TEST_ACCURACY = 0.93;

const root = mkdtempSync(join(tmpdir(), 'mnist-ddp-resume-'));
const dirA = join(root, 'A');
const dirB = join(root, 'B');
const dirC = join(root, 'C');
const results: Record<'a' | 'b' | 'bResumed' | 'c' | 'evalC', CliResult> = {} as never;
let stateBStopped: State;

const state = (runDir: string): State => JSON.parse(readFileSync(join(runDir, 'checkpoint', 'state.json'), 'utf8')) as State;
const ok = (r: CliResult, what: string): void => expect(r.code, `${what} failed:\n${r.stderr.slice(-3000)}`).toBe(0);

beforeAll(async () => {
  // Independent processes run side by side; the resume and the eval need their predecessors' checkpoints.
  [results.a, results.b, results.c] = await Promise.all([
    runCli(['train', ...RUN, '--run-dir', dirA], { timeoutMs: 150_000 }),
    runCli(['train', ...RUN, '--max-steps', '50', '--run-dir', dirB], { timeoutMs: 150_000 }),
    runCli(['train', ...ACCURACY_RUN, '--run-dir', dirC], { timeoutMs: 150_000 }),
  ]);
  ok(results.b, 'run B (--max-steps 50)');
  stateBStopped = state(dirB);
  [results.bResumed, results.evalC] = await Promise.all([
    runCli(['train', '--resume', join(dirB, 'checkpoint'), '--epochs', '2', '--json', '--no-report'], { timeoutMs: 120_000 }),
    runCli(['eval', '--checkpoint', join(dirC, 'checkpoint'), '--backend', 'wasm', '--json'], { timeoutMs: 120_000 }),
  ]);
}, 280_000);

afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('train --resume', () => {
  it('--max-steps 50 stops mid-epoch 2 with a resumable checkpoint', () => {
    expect(lastJson<TrainSummary>(results.b.stdout).stoppedEarly).toBe(true);
    expect(stateBStopped).toMatchObject({ epoch: 1, cursor: 384, globalStep: 50, optimizer: { name: 'sgd', step: 50 } });
  });

  it('resumed run B ends bit-identical to uninterrupted run A', () => {
    ok(results.a, 'run A');
    ok(results.bResumed, 'resumed run B');
    const a = state(dirA);
    const b = state(dirB);
    expect(a).toMatchObject({ epoch: 2, cursor: 0, globalStep: 76 });
    expect(b.globalStep).toBe(a.globalStep);
    expect(b.optimizer.step).toBe(a.optimizer.step);
    expect(b.weightsDigest).toBe(a.weightsDigest);
    // The comparison is not vacuous: the stopped checkpoint held different weights.
    expect(stateBStopped.weightsDigest).not.toBe(a.weightsDigest);
    expect(readFileSync(join(dirB, 'checkpoint', 'weights.bin')).equals(readFileSync(join(dirA, 'checkpoint', 'weights.bin')))).toBe(true);
    expect(readFileSync(join(dirB, 'checkpoint', 'optimizer.bin')).equals(readFileSync(join(dirA, 'checkpoint', 'optimizer.bin')))).toBe(true);

    const summaryA = lastJson<TrainSummary>(results.a.stdout);
    const summaryB = lastJson<TrainSummary>(results.bResumed.stdout);
    expect(summaryB).toMatchObject({ stoppedEarly: false, epochs: 2 });
    expect(summaryB.testAccuracy).toBe(summaryA.testAccuracy);
  });
});

describe('a short real training run', () => {
  it(`cnn on 5 000 samples for one epoch reaches >= ${MIN_TEST_ACCURACY} test accuracy`, () => {
    ok(results.c, 'accuracy run');
    const summary = lastJson<TrainSummary>(results.c.stdout);
    expect(summary.stoppedEarly).toBe(false);
    expect(summary.testAccuracy).toBeGreaterThanOrEqual(MIN_TEST_ACCURACY);
  });

  it('eval --checkpoint gives the same accuracy and confusion matrix as the training run', () => {
    ok(results.evalC, 'eval');
    const summary = lastJson<TrainSummary>(results.c.stdout);
    const evaluated = lastJson<{ accuracy: number; count: number; confusion: number[][] }>(results.evalC.stdout);
    expect(evaluated.count).toBe(10_000);
    expect(evaluated.accuracy).toBe(summary.testAccuracy);
    const trainReport = JSON.parse(readFileSync(join(dirC, 'eval.json'), 'utf8')) as { confusion: number[][] };
    expect(evaluated.confusion).toEqual(trainReport.confusion);
  });
});
