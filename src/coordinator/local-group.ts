import type { EvaluationCounts } from '../shared/train/evaluator.js';
import type { WorkerCore } from '../shared/train/worker-core.js';
import type { EvalSplit, ReplicaSnapshot } from '../shared/wire/control-payloads.js';
import type { StepOrder, StepResult, WorkerGroup } from './driver.js';

/**
 * Single-node debug mode: the coordinator's loop drives one in-process worker through plain function calls — the
 * same step code as a distributed worker, with a world-size-1 reducer and no sockets, so a debugger steps straight
 * from the training loop into the kernels.
 */
export class LocalWorkerGroup implements WorkerGroup {
  readonly worldSize = 1;
  readonly generation = 0;

  constructor(private readonly worker: WorkerCore) {}

  async runStep(plan: StepOrder): Promise<StepResult> {
    const report = await this.worker.runStep({ ...plan, generation: this.generation });
    return { loss: report.loss, reports: [report] };
  }

  async evaluate(split: EvalSplit, mistakes = 0): Promise<EvaluationCounts> {
    return this.worker.evaluate(split, mistakes);
  }

  async snapshot(): Promise<ReplicaSnapshot> {
    return this.worker.snapshot();
  }

  async close(): Promise<void> {}
}
