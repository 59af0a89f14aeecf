import { initBackend } from '../shared/core/backend.js';
import { trainConfigSchema, type BenchConfig } from '../shared/core/config.js';
import { runTraining } from '../coordinator/driver.js';
import { planDataset } from '../shared/data/dataset-plan.js';
import { componentLogger } from '../shared/core/log.js';
import type { StepReport } from '../shared/train/worker-core.js';
import { median, roundTo } from '../shared/core/stats.js';
import type { ThroughputResult } from './bench.js';
import { startLocalWorkerGroup } from '../coordinator/start-group.js';
import { prepareRun } from '../coordinator/run.js';

/**
 * stepMsP50 is the coordinator's view of one step: the time between two step completions (orders are pipelined).
 * computeMsP50 and applyMsP50 are medians over every rank's step reports.
 */
export interface DistributedBenchResult extends ThroughputResult {
  /** Median over every rank's step reports; includes waiting for the slowest rank's gradients. */
  allReduceMsP50: number;
  /** Median over steps of the fastest rank's all-reduce (the rank that finished computing last waits least). */
  allReduceMinMsP50: number;
  /** Median over steps of the slowest rank's compute: a step cannot end before it (the straggler). */
  computeMaxMsP50: number;
}

/**
 * `mnist-ddp bench --workers N`: the training driver itself (pipelined step orders, one ring all-reduce per step)
 * drives N local worker processes; warm-up steps first, then `windows` timed windows measured between step
 * completions. Constant lr 0.01 and no digests, so the figure is the training step and nothing else.
 */
export async function runDistributedBench(bench: BenchConfig): Promise<DistributedBenchResult> {
  const log = componentLogger('bench');
  const selection = await initBackend(bench.backend, log);
  const perWindow = Math.max(1, Math.floor(bench.steps / bench.windows));
  const config = Object.freeze(trainConfigSchema.parse({
    model: bench.model, batchSize: bench.batchSize, optimizer: bench.optimizer, seed: bench.seed, backend: bench.backend,
    workers: bench.workers, validationSize: 0, report: false, schedule: 'constant', lr: 0.01, warmupSteps: 0,
    epochs: 1_000_000, maxSteps: bench.warmup + perWindow * bench.windows,
  }));
  const run = await prepareRun(config);
  const group = await startLocalWorkerGroup(run, bench.workers, bench.backend, { digestEvery: 0 }, componentLogger('coordinator'));
  const done: Array<{ at: number; count: number; stepMs: number; reports: StepReport[] }> = [];
  try {
    let last = performance.now();
    await runTraining(config, group, planDataset(config), { epoch: 0, cursor: 0, globalStep: 0 }, {
      onStep: (e) => {
        const at = performance.now();
        done.push({ at, count: e.globalCount, stepMs: at - last, reports: e.reports });
        last = at;
      },
    });
  } finally {
    await group.close('bench finished');
  }
  const timed = done.slice(bench.warmup);
  const windows: number[] = [];
  for (let w = 0; w < bench.windows; w++) {
    const slice = timed.slice(w * perWindow, (w + 1) * perWindow);
    // A window starts when the step before its first one completed (the last warm-up step for the first window).
    const startAt = done[bench.warmup + w * perWindow - 1]?.at ?? slice[0]!.at - slice[0]!.stepMs;
    windows.push((slice.reduce((n, s) => n + s.count, 0) * 1000) / (slice[slice.length - 1]!.at - startAt));
  }
  const reports = timed.flatMap((s) => s.reports);
  return {
    backend: selection.backend,
    ...(selection.adapter ? { adapter: selection.adapter } : {}),
    model: config.model,
    batchSize: config.batchSize,
    workers: group.worldSize,
    steps: timed.length,
    samplesPerSec: roundTo(median(windows), 1),
    windows: windows.map((v) => roundTo(v, 1)),
    stepMsP50: roundTo(median(timed.map((s) => s.stepMs)), 2),
    computeMsP50: roundTo(median(reports.map((r) => r.computeMs)), 2),
    applyMsP50: roundTo(median(reports.map((r) => r.applyMs)), 2),
    allReduceMsP50: roundTo(median(reports.map((r) => r.allReduceMs)), 2),
    allReduceMinMsP50: roundTo(median(timed.map((s) => Math.min(...s.reports.map((x) => x.allReduceMs)))), 2),
    computeMaxMsP50: roundTo(median(timed.map((s) => Math.max(...s.reports.map((x) => x.computeMs)))), 2),
  };
}

export function formatDistributedBench(r: DistributedBenchResult): string {
  return [
    `mnist-ddp bench: ${r.model}, batch ${r.batchSize} per worker, backend ${r.backend}, ${r.workers} worker process(es), ${r.steps} timed steps`,
    `  samples/s (global, median of ${r.windows.length} windows): ${r.samplesPerSec}   [${r.windows.join(', ')}]`,
    `  step p50 ${r.stepMsP50} ms (compute ${r.computeMsP50} ms, slowest rank ${r.computeMaxMsP50} ms, all-reduce ${r.allReduceMsP50} ms [fastest rank ${r.allReduceMinMsP50} ms], apply ${r.applyMsP50} ms)`,
  ].join('\n');
}
