import { initBackend } from '../shared/backend.js';
import { trainConfigSchema, type BenchConfig } from '../shared/config.js';
import { planDataset } from '../shared/dataset-plan.js';
import { componentLogger } from '../shared/log.js';
import { stepCount } from '../shared/shard-plan.js';
import type { StepReport } from '../worker/worker-core.js';
import { median } from './bench.js';
import { startLocalWorkerGroup } from './train-distributed.js';
import { prepareRun } from './train.js';

export interface DistributedBenchResult {
  backend: string;
  model: string;
  /** Per worker; a step's global batch is workers × batchSize. */
  batchSize: number;
  workers: number;
  steps: number;
  /** Global samples/s: median over windows of (samples of all workers / window wall time). */
  samplesPerSec: number;
  windows: number[];
  /** Coordinator's view of one step: order sent → every rank's step-done received. */
  stepMsP50: number;
  /** Median over every rank's step reports. */
  computeMsP50: number;
  applyMsP50: number;
  /** Median over every rank's step reports; includes waiting for the slowest rank's gradients. */
  allReduceMsP50: number;
  /** Median over steps of the fastest rank's all-reduce (the rank that finished computing last waits least). */
  allReduceMinMsP50: number;
}

const round = (x: number, digits: number): number => Math.round(x * 10 ** digits) / 10 ** digits;

/**
 * `mnist-ddp bench --workers N`: a coordinator in this process drives N local worker processes through the same
 * WorkerGroup interface as training (one ring all-reduce per step), warm-up steps first, then `windows` timed
 * windows. Constant lr 0.01 and no digests, so the figure is the training step and nothing else.
 */
export async function runDistributedBench(bench: BenchConfig): Promise<DistributedBenchResult> {
  const log = componentLogger('bench');
  const selection = await initBackend(bench.backend, log);
  const config = Object.freeze(trainConfigSchema.parse({
    model: bench.model, batchSize: bench.batchSize, optimizer: bench.optimizer, seed: bench.seed, backend: bench.backend,
    workers: bench.workers, validationSize: 0, report: false,
  }));
  const run = await prepareRun(config);
  const epochSize = planDataset(config).train.length;
  const group = await startLocalWorkerGroup(run, bench.workers, bench.backend, { digestEvery: 0 }, componentLogger('coordinator'));
  try {
    let epoch = 0;
    let cursor = 0;
    let step = 0;
    const next = async (): Promise<{ count: number; reports: StepReport[] }> => {
      if (cursor >= epochSize) [epoch, cursor] = [epoch + 1, 0];
      const count = stepCount(epochSize, cursor, group.worldSize, config.batchSize);
      const result = await group.runStep({ epoch, step, cursor, count, lr: 0.01 });
      cursor += count;
      step++;
      return { count, reports: result.reports };
    };
    for (let i = 0; i < bench.warmup; i++) await next();
    const perWindow = Math.max(1, Math.floor(bench.steps / bench.windows));
    const windows: number[] = [];
    const stepMs: number[] = [];
    const reports: StepReport[] = [];
    const allReduceMin: number[] = [];
    for (let w = 0; w < bench.windows; w++) {
      let samples = 0;
      const t0 = performance.now();
      for (let i = 0; i < perWindow; i++) {
        const s0 = performance.now();
        const r = await next();
        stepMs.push(performance.now() - s0);
        samples += r.count;
        reports.push(...r.reports);
        allReduceMin.push(Math.min(...r.reports.map((x) => x.allReduceMs)));
      }
      windows.push((samples * 1000) / (performance.now() - t0));
    }
    return {
      backend: selection.backend,
      model: config.model,
      batchSize: config.batchSize,
      workers: group.worldSize,
      steps: perWindow * bench.windows,
      samplesPerSec: round(median(windows), 1),
      windows: windows.map((v) => round(v, 1)),
      stepMsP50: round(median(stepMs), 2),
      computeMsP50: round(median(reports.map((r) => r.computeMs)), 2),
      applyMsP50: round(median(reports.map((r) => r.applyMs)), 2),
      allReduceMsP50: round(median(reports.map((r) => r.allReduceMs)), 2),
      allReduceMinMsP50: round(median(allReduceMin), 2),
    };
  } finally {
    await group.close('bench finished');
  }
}

export function formatDistributedBench(r: DistributedBenchResult): string {
  return [
    `mnist-ddp bench: ${r.model}, batch ${r.batchSize} per worker, backend ${r.backend}, ${r.workers} worker process(es), ${r.steps} timed steps`,
    `  samples/s (global, median of ${r.windows.length} windows): ${r.samplesPerSec}   [${r.windows.join(', ')}]`,
    `  step p50 ${r.stepMsP50} ms (compute ${r.computeMsP50} ms, all-reduce ${r.allReduceMsP50} ms [fastest rank ${r.allReduceMinMsP50} ms], apply ${r.applyMsP50} ms)`,
  ].join('\n');
}
