import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'vitest';

/** A `type: "step"` line of a run's history.jsonl, the fields the elastic tests check. */
export interface StepRecord {
  type: 'step';
  step: number;
  epoch: number;
  /** Position of the step's first sample in the epoch order. */
  cursor: number;
  /** Samples of the step, all workers together. */
  count: number;
  workers: number;
  generation: number;
}

/** The step records of `runDir`/history.jsonl so far, in order; [] before the file exists. */
export function readSteps(runDir: string): StepRecord[] {
  const file = join(runDir, 'history.jsonl');
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as { type: string }).filter((r): r is StepRecord => r.type === 'step');
}

/** Exactly once: the steps' samples tile [0, samples) of the epoch order, in order, without gaps or overlaps. */
export function expectEverySampleOnce(steps: readonly StepRecord[], samples: number): void {
  let expected = 0;
  for (const s of steps) {
    expect(s.cursor, `step ${s.step}`).toBe(expected);
    expected += s.count;
  }
  expect(expected).toBe(samples);
}
