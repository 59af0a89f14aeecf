import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'vitest';
import { readSteps, type StepRecord } from './history.js';

/**
 * Exactly once: each of the run's `epochs` epochs, in order, has steps whose samples tile [0, samples) of that epoch's
 * order, in order, without gaps or overlaps.
 */
export function expectEverySampleOnce(steps: readonly StepRecord[], samples: number, epochs = 1): void {
  const order = steps.map((s) => s.epoch).filter((e, i, all) => i === 0 || e !== all[i - 1]);
  expect(order, 'the epochs the steps belong to, in the order they ran').toEqual([...new Set(order)].sort((a, b) => a - b));
  expect(order, 'epochs trained').toHaveLength(epochs);
  for (const epoch of order) {
    let expected = 0;
    for (const s of steps.filter((step) => step.epoch === epoch)) {
      expect(s.cursor, `epoch ${epoch}, step ${s.step}`).toBe(expected);
      expected += s.count;
    }
    expect(expected, `samples of epoch ${epoch}`).toBe(samples);
  }
}

/**
 * A finished run directory accounts for every sample exactly once: steps numbered 1..n without gaps, their samples
 * tiling each epoch's order, and the final checkpoint's optimiser having applied exactly n updates (a step applied
 * twice or lost in a recovery shows up there, not only in what the coordinator recorded). Returns the steps.
 */
export function expectRunAccountedOnce(runDir: string, samples: number, minAccuracy: number, epochs = 1): StepRecord[] {
  const all = readSteps(runDir);
  expect(all.map((s) => s.step), 'step numbers').toEqual(all.map((_, i) => i + 1));
  expectEverySampleOnce(all, samples, epochs);
  const state = JSON.parse(readFileSync(join(runDir, 'checkpoint', 'state.json'), 'utf8')) as { globalStep: number; optimizer: { step: number } };
  expect(state.globalStep).toBe(all.length);
  expect(state.optimizer.step).toBe(all.length);
  const evaluation = JSON.parse(readFileSync(join(runDir, 'eval.json'), 'utf8')) as { count: number; accuracy: number };
  expect(evaluation.count).toBe(10_000);
  expect(evaluation.accuracy).toBeGreaterThan(minAccuracy);
  return all;
}
