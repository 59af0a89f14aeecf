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
  /** Samples each rank processed, by rank; absent for a step whose reports a recovery lost. */
  shares?: number[];
}

/**
 * The step records of `runDir`/history.jsonl so far, in order; [] before the file exists. A `rewind` record (training
 * went back to a checkpoint, issue #14) drops the earlier records of the steps after it: they are redone.
 */
export function readSteps(runDir: string): StepRecord[] {
  const steps: StepRecord[] = [];
  for (const r of readRecords(runDir)) {
    if (r.type === 'step') steps.push(r as unknown as StepRecord);
    else if (r.type === 'rewind') {
      const toStep = r.toStep as number;
      while (steps.length > 0 && steps.at(-1)!.step > toStep) steps.pop();
    }
  }
  return steps;
}

/** Every record of `runDir`/history.jsonl (a torn last line is skipped). */
export function readRecords(runDir: string): Array<{ type: string; [key: string]: unknown }> {
  const file = join(runDir, 'history.jsonl');
  if (!existsSync(file)) return [];
  const out: Array<{ type: string; [key: string]: unknown }> = [];
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    if (!line.trim()) continue;
    try {
      out.push(JSON.parse(line) as { type: string });
    } catch {
      // the line being written
    }
  }
  return out;
}
