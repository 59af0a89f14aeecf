// No vitest import here: bench/scrape-latency.ts reads history.jsonl through this file from plain Node.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

/** A `type: "step"` line of a run's history.jsonl: the fields the elastic tests check and bench/ reads. */
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
  /** Global samples/s of the step, as the coordinator measured it. */
  samplesPerSec: number;
}

/** The step records of `runDir`/history.jsonl so far, in order; [] before the file exists. */
export function readSteps(runDir: string): StepRecord[] {
  const file = join(runDir, 'history.jsonl');
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as { type: string }).filter((r): r is StepRecord => r.type === 'step');
}
