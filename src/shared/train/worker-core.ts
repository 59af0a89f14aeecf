import { MnistDdpError } from '../core/errors.js';
import { augmentBatch } from '../data/augment.js';
import type { DatasetPlan } from '../data/dataset-plan.js';
import { gatherBatch, IMAGE_PIXELS, type Batch } from '../data/mnist.js';
import { deriveSeed, Rng } from '../data/rng.js';
import { epochOrder, evalSlice, maxShare, rankSlice, shareSlice } from '../data/shard-plan.js';
import type { AllReducer } from './reducer.js';
import type { EvaluationCounts } from './evaluator.js';
import type { Replica } from './replica.js';
import { TrainStep, type AnomalyPolicy } from './step.js';
import type { EvalSplit, ReplicaSnapshot, StepPlan, StepReport } from '../wire/control-payloads.js';

// The control plane's records are declared by their wire schemas; re-exported for the code that runs them.
export type { EvalSplit, ReplicaSnapshot, StepPlan, StepReport };

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
  /** Reused batch buffers: --batch-size samples at first, grown when a step plan gives this rank a larger share. */
  private buffers: { x: Float32Array; y: Int32Array };

  constructor(
    readonly replica: Replica,
    private readonly plan: DatasetPlan,
    private readonly options: { seed: number; batchSize: number; augment: boolean; anomaly?: AnomalyPolicy },
    private reducer: AllReducer,
  ) {
    this.step = new TrainStep(replica, reducer, options.anomaly);
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
    this.step = new TrainStep(this.replica, reducer, this.options.anomaly);
  }

  private epochOrder(epoch: number): Int32Array {
    if (epoch !== this.orderEpoch) {
      this.order = epochOrder(this.plan.train, this.options.seed, epoch);
      this.orderEpoch = epoch;
    }
    return this.order;
  }

  /** This rank's positions in the epoch order: its share of the plan's global batch (shareSlice or rankSlice). */
  private slice(p: StepPlan): [number, number] {
    if (!p.shares) return rankSlice(p.cursor, p.count, this.rank, this.worldSize);
    const sum = p.shares.reduce((a, b) => a + b, 0);
    if (p.shares.length !== this.worldSize || sum !== p.count) {
      throw new MnistDdpError('FRAME_UNEXPECTED', `rank ${this.rank}: step ${p.step} names ${p.shares.length} shares summing to ${sum} for ${this.worldSize} ranks and ${p.count} samples; run the coordinator and workers from the same mnist-ddp version`,
        { rank: this.rank, step: p.step, shares: p.shares, count: p.count });
    }
    return shareSlice(p.cursor, p.shares, this.rank);
  }

  localBatch(p: StepPlan): Batch {
    const [start, end] = this.slice(p);
    const ids = this.epochOrder(p.epoch).subarray(start, end);
    const limit = p.shares ? maxShare(this.options.batchSize) : this.options.batchSize;
    if (ids.length > limit) {
      // The coordinator plans at most batchSize samples per rank (maxShare with unequal shares): a bigger share means
      // the two disagree on the run.
      throw new MnistDdpError('FRAME_UNEXPECTED', `rank ${this.rank}: step ${p.step} assigns ${ids.length} samples, more than the ${limit} a rank may take at --batch-size ${this.options.batchSize}; run the coordinator and workers from the same mnist-ddp version`,
        { rank: this.rank, step: p.step, samples: ids.length, batchSize: this.options.batchSize });
    }
    if (ids.length > this.buffers.y.length) this.buffers = { x: new Float32Array(ids.length * IMAGE_PIXELS), y: new Int32Array(ids.length) };
    const batch = gatherBatch(this.plan.data.train.images, this.plan.data.train.labels, ids, this.buffers);
    if (this.options.augment && batch.size > 0) {
      augmentBatch(batch.x, batch.size, new Rng(deriveSeed(this.options.seed, p.epoch, p.step, this.rank)));
    }
    return { ...batch, sampleKey: p.epoch * this.plan.train.length + start };
  }

  async runStep(p: StepPlan): Promise<StepReport> {
    const batch = this.localBatch(p);
    const outcome = await this.step.run(batch, p.step, p.lr);
    return {
      rank: this.rank, loss: outcome.loss, globalCount: outcome.globalCount, localCount: batch.size,
      computeMs: outcome.computeMs, allReduceMs: outcome.allReduceMs, applyMs: outcome.applyMs,
      ...(outcome.anomaly ? { anomaly: outcome.anomaly } : {}),
    };
  }

  /** This rank's contiguous share of a split (exact counts, no padding); the coordinator sums the shares. */
  evaluate(split: EvalSplit, mistakes = 0): Promise<EvaluationCounts> {
    const indices = split === 'test' ? this.plan.test : this.plan.validation;
    const source = split === 'test' ? this.plan.data.test : this.plan.data.train;
    const [start, end] = evalSlice(indices.length, this.rank, this.worldSize);
    return this.replica.evaluator.evaluate(indices.subarray(start, end), (ids) => gatherBatch(source.images, source.labels, ids), { mistakes });
  }

  async snapshot(): Promise<ReplicaSnapshot> {
    return { weights: await this.replica.allWeights(), optimizer: this.replica.optimizer.state() };
  }

  restore(s: ReplicaSnapshot): void {
    this.replica.setAllWeights(s.weights);
    this.replica.optimizer.load(s.optimizer);
  }
}
