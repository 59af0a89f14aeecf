import { appendFileSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { readSteps } from '../helpers/history.js';
import { untilRecorded } from '../helpers/run-dir.js';

// The e2e kill and scale tests act on what a run has recorded (test/helpers/run-dir.ts); this checks that helper on
// its own, since a helper that missed a file event would only show up there as a slow, puzzling timeout.

const base = mkdtempSync(join(tmpdir(), 'mnist-ddp-run-dir-'));
afterAll(() => rmSync(base, { recursive: true, force: true }));

const step = (n: number): string => `${JSON.stringify({ type: 'step', step: n, workers: 3 })}\n`;

describe('untilRecorded', () => {
  it('wakes on the step that satisfies it, in a run directory created after the wait began', async () => {
    const runDir = join(base, 'late');
    const reached = untilRecorded(runDir, 'step 3', () => readSteps(runDir).find((s) => s.step === 3), { deadlineMs: 10_000 });
    mkdirSync(runDir);
    for (const n of [1, 2, 3]) appendFileSync(join(runDir, 'history.jsonl'), step(n));
    await expect(reached).resolves.toMatchObject({ step: 3 });
  });

  it('rejects at the deadline, naming what it waited for and the last state', async () => {
    const runDir = join(base, 'idle');
    mkdirSync(runDir);
    await expect(untilRecorded(runDir, 'a step that never comes', () => undefined, { deadlineMs: 200, describeLast: () => '; nothing written' }))
      .rejects.toThrow(/timed out after 200 ms waiting for a step that never comes .*; nothing written/);
  });

  it('stops when its signal aborts (the process writing the run exited)', async () => {
    const ended = new AbortController();
    const waiting = untilRecorded(join(base, 'aborted'), 'anything', () => undefined, { signal: ended.signal });
    ended.abort(new Error('the run ended'));
    await expect(waiting).rejects.toThrow('the run ended');
  });
});
