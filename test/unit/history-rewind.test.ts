import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { HistoryWriter } from '../../src/coordinator/history.js';
import type { StepEvent } from '../../src/coordinator/driver.js';
import { readHistory } from '../../src/report/write-report.js';
import { readSteps } from '../helpers/history.js';

// Issue #14: after a checkpoint is restored (every worker lost, or a restarted coordinator), the redone steps are
// recorded again; a `rewind` record says which earlier records they supersede, and every reader honours it.

const step = (n: number, epoch = 0): StepEvent => ({
  epoch, step: n, cursor: n * 10, epochSize: 100, loss: 1 / n, lr: 0.1, globalCount: 10, samplesPerSec: 1, worldSize: 2, generation: 1, reports: [], progress: n / 10,
});

describe('history.jsonl rewind records', () => {
  it('supersede the step and epoch records after the restored position, for the report and the test reader', () => {
    const runDir = mkdtempSync(join(tmpdir(), 'mnist-ddp-history-'));
    const history = new HistoryWriter(join(runDir, 'history.jsonl'));
    for (let n = 1; n <= 5; n++) history.step(step(n));
    history.rewind({ epoch: 0, cursor: 30, globalStep: 3 }, 'test');
    for (let n = 4; n <= 10; n++) history.step(step(n));
    history.epoch({ epoch: 0, validation: null, wallMs: 1, samplesPerSec: 1 });
    history.rewind({ epoch: 1, cursor: 0, globalStep: 10 }, 'resumed');
    expect(readSteps(runDir).map((s) => s.step)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    const report = readHistory(join(runDir, 'history.jsonl'));
    expect(report.steps.map((s) => s.step)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect(report.epochs.map((e) => e.epoch)).toEqual([0]);
    history.rewind({ epoch: 0, cursor: 0, globalStep: 0 }, 'back to the start');
    expect(readSteps(runDir)).toEqual([]);
    expect(readHistory(join(runDir, 'history.jsonl')).epochs).toEqual([]);
  });
});
