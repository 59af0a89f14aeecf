import { expect } from 'vitest';
import type { StepRecord } from './history.js';

/** Exactly once: the steps' samples tile [0, samples) of the epoch order, in order, without gaps or overlaps. */
export function expectEverySampleOnce(steps: readonly StepRecord[], samples: number): void {
  let expected = 0;
  for (const s of steps) {
    expect(s.cursor, `step ${s.step}`).toBe(expected);
    expected += s.count;
  }
  expect(expected).toBe(samples);
}
