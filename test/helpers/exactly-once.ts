import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'vitest';
import { readSteps, type StepRecord } from './history.js';

/** Exactly once: the steps' samples tile [0, samples) of the epoch order, in order, without gaps or overlaps. */
export function expectEverySampleOnce(steps: readonly StepRecord[], samples: number): void {
  let expected = 0;
  for (const s of steps) {
    expect(s.cursor, `step ${s.step}`).toBe(expected);
    expected += s.count;
  }
  expect(expected).toBe(samples);
}

/**
 * A finished run directory accounts for every sample exactly once: steps numbered 1..n without gaps, their samples
 * tiling the epoch order, and the final checkpoint's optimiser having applied exactly n updates (a step applied
 * twice or lost in a recovery shows up there, not only in what the coordinator recorded). Returns the steps.
 */
export function expectRunAccountedOnce(runDir: string, samples: number, minAccuracy: number): StepRecord[] {
  const all = readSteps(runDir);
  expect(all.map((s) => s.step), 'step numbers').toEqual(all.map((_, i) => i + 1));
  expectEverySampleOnce(all, samples);
  const state = JSON.parse(readFileSync(join(runDir, 'checkpoint', 'state.json'), 'utf8')) as { globalStep: number; optimizer: { step: number } };
  expect(state.globalStep).toBe(all.length);
  expect(state.optimizer.step).toBe(all.length);
  const evaluation = JSON.parse(readFileSync(join(runDir, 'eval.json'), 'utf8')) as { count: number; accuracy: number };
  expect(evaluation.count).toBe(10_000);
  expect(evaluation.accuracy).toBeGreaterThan(minAccuracy);
  return all;
}
