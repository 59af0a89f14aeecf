import { augmentBatch } from '../data/augment.js';
import type { DatasetPlan } from '../data/dataset-plan.js';
import { gatherBatch, IMAGE_PIXELS, type Batch } from '../data/mnist.js';
import type { OptimizerState } from './optimizers.js';
import { deriveSeed, Rng } from '../data/rng.js';
import { epochOrder, evalSlice, rankSlice } from '../data/shard-plan.js';
import type { AllReducer } from './reducer.js';
import type { EvaluationCounts, Replica } from './replica.js';
import { TrainStep } from './step.js';

/** What the coordinator asks of every worker for one step. */
export interface StepPlan {
  generation: number;
  epoch: number;
  /** Global step number (counts from the start of the run). */
  step: number;
  /** Position in the epoch order where this step's global batch starts. */
  cursor: number;
  /** Samples in the global batch. */
  count: number;
  lr: number;
}

export interface StepReport {
  rank: number;
  loss: number;
  globalCount: number;
  localCount: number;
  computeMs: number;
  allReduceMs: number;
  applyMs: number;
}

export interface ReplicaSnapshot {
  /** Every model weight (trainable, frozen and batch-norm statistics) in model.weights order. */
  weights: Float32Array;
  optimizer: OptimizerState;
}

export type EvalSplit = 'validation' | 'test';

/**
 * Everything a worker does, independent of how it talks to the coordinator: the worker process wraps it with a
 * ZeroMQ control plane and a ring reducer, single-process debug mode calls it directly with a LocalReducer.
 * Randomness is stateless: a step's augmentation stream is derived from (seed, epoch, step, rank), so resuming or
 * re-forming the ring needs no RNG state on the wire.
 */
export class WorkerCore {
  private step: TrainStep;
  private orderEpoch = -1;
  private order: Int32Array = new Int32Array(0);
  private readonly buffers: { x: Float32Array; y: Int32Array };

  constructor(
    readonly replica: Replica,
    private readonly plan: DatasetPlan,
    private readonly options: { seed: number; batchSize: number; augment: boolean },
    private reducer: AllReducer,
  ) {
    this.step = new TrainStep(replica, reducer);
    this.buffers = { x: new Float32Array(options.batchSize * IMAGE_PIXELS), y: new Int32Array(options.batchSize) };
  }

  get rank(): number {
    return this.reducer.rank;
  }

  get worldSize(): number {
    return this.reducer.worldSize;
  }

  /** Swaps the reducer when the ring is re-formed (new generation); the caller closes the old one. */
  setReducer(reducer: AllReducer): void {
    this.reducer = reducer;
    this.step = new TrainStep(this.replica, reducer);
  }

  private epochOrder(epoch: number): Int32Array {
    if (epoch !== this.orderEpoch) {
      this.order = epochOrder(this.plan.train, this.options.seed, epoch);
      this.orderEpoch = epoch;
    }
    return this.order;
  }

  localBatch(p: StepPlan): Batch {
    const [start, end] = rankSlice(p.cursor, p.count, this.rank, this.worldSize);
    const ids = this.epochOrder(p.epoch).subarray(start, end);
    if (ids.length > this.options.batchSize) {
      throw new Error(`rank ${this.rank}: step ${p.step} assigns ${ids.length} samples, more than --batch-size ${this.options.batchSize}`);
    }
    const batch = gatherBatch(this.plan.data.train.images, this.plan.data.train.labels, ids, this.buffers);
    if (this.options.augment && batch.size > 0) {
      augmentBatch(batch.x, batch.size, new Rng(deriveSeed(this.options.seed, p.epoch, p.step, this.rank)));
    }
    return batch;
  }

  async runStep(p: StepPlan): Promise<StepReport> {
    const batch = this.localBatch(p);
    const outcome = await this.step.run(batch, p.step, p.lr);
    return {
      rank: this.rank, loss: outcome.loss, globalCount: outcome.globalCount, localCount: batch.size,
      computeMs: outcome.computeMs, allReduceMs: outcome.allReduceMs, applyMs: outcome.applyMs,
    };
  }

  /** This rank's contiguous share of a split (exact counts, no padding); the coordinator sums the shares. */
  evaluate(split: EvalSplit, mistakes = 0): EvaluationCounts {
    const indices = split === 'test' ? this.plan.test : this.plan.validation;
    const source = split === 'test' ? this.plan.data.test : this.plan.data.train;
    const [start, end] = evalSlice(indices.length, this.rank, this.worldSize);
    return this.replica.evaluate(indices.subarray(start, end), (ids) => gatherBatch(source.images, source.labels, ids), { mistakes });
  }

  snapshot(): ReplicaSnapshot {
    return { weights: this.replica.allWeights(), optimizer: this.replica.optimizer.state() };
  }

  restore(s: ReplicaSnapshot): void {
    this.replica.setAllWeights(s.weights);
    this.replica.optimizer.load(s.optimizer);
  }
}
