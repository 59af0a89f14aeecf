import type { AllReducer } from './reducer.js';
import type { Batch, Replica } from './replica.js';

export interface StepTimings {
  computeMs: number;
  allReduceMs: number;
  applyMs: number;
}

export interface StepOutcome extends StepTimings {
  /** Mean loss over the global batch. */
  loss: number;
  /** Samples in the global batch. */
  globalCount: number;
}

/**
 * One data-parallel step: computeGradients → allReduce → applyGradients (tfjs's Optimizer.minimize, with the
 * all-reduce in the middle). Single-process mode runs exactly this with a world-size-1 LocalReducer.
 * The gradient buffer is allocated once, by the reducer (the ring sums into it in place), and reused; tensors are
 * disposed inside computeGradients.
 */
export class TrainStep {
  private readonly buffer: Float32Array;

  constructor(private readonly replica: Replica, private readonly reducer: AllReducer) {
    this.buffer = reducer.allocate(replica.layout.bufferLength);
  }

  async run(batch: Batch, step: number, lr: number): Promise<StepOutcome> {
    const t0 = performance.now();
    await this.replica.computeGradients(batch, this.buffer);
    const t1 = performance.now();
    const reduced = await this.reducer.allReduce(this.buffer, step);
    const t2 = performance.now();
    const { loss, count } = this.replica.applyReduced(reduced, lr, step);
    const t3 = performance.now();
    return { loss, globalCount: count, computeMs: t1 - t0, allReduceMs: t2 - t1, applyMs: t3 - t2 };
  }
}
