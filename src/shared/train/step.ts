import { MnistDdpError } from '../core/errors.js';
import { componentLogger, type Logger } from '../core/log.js';
import { detectAnomaly, gradientNorm, healthLength, readHealth, sumTolerance, writeHealth, type AnomalyResponse, type GradientAnomaly } from './gradient-health.js';
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
  /** Set when the ranks' gradients were judged anomalous and the step was skipped (nothing applied, on every rank). */
  anomaly?: GradientAnomaly;
}

/** How a multi-rank step checks the ranks' gradients against each other (gradient-health.ts). */
export interface AnomalyPolicy {
  onAnomaly: AnomalyResponse;
  /** A rank whose gradient norm per sample exceeds this many times the median is named (three ranks or more). */
  anomalyFactor: number;
  log?: Logger;
}

export const DEFAULT_ANOMALY_POLICY: AnomalyPolicy = { onAnomaly: 'skip', anomalyFactor: 100 };

/**
 * One data-parallel step: computeGradients → allReduce → applyGradients (tfjs's Optimizer.minimize, with the
 * all-reduce in the middle). Single-process mode runs exactly this with a world-size-1 LocalReducer.
 * The gradient buffer is allocated once, by the reducer (the ring sums into it in place), and reused; tensors are
 * disposed inside computeGradients. With more than one rank the buffer ends with every rank's health report, and a
 * step whose reports name a rank is skipped everywhere or fails with GRADIENT_ANOMALY (`policy.onAnomaly`).
 */
export class TrainStep {
  private readonly buffer: Float32Array;
  private readonly checked: boolean;
  private readonly log: Logger | undefined;

  constructor(private readonly replica: Replica, private readonly reducer: AllReducer, private readonly policy: AnomalyPolicy = DEFAULT_ANOMALY_POLICY) {
    this.checked = reducer.worldSize > 1;
    this.buffer = reducer.allocate(replica.layout.bufferLength + healthLength(reducer.worldSize));
    this.log = this.checked ? (policy.log ?? componentLogger('train-step', { rank: reducer.rank })) : undefined;
  }

  async run(batch: Batch, step: number, lr: number): Promise<StepOutcome> {
    const { layout } = this.replica;
    const t0 = performance.now();
    await this.replica.computeGradients(batch, this.buffer);
    if (this.checked) writeHealth(this.buffer, layout, this.reducer.rank, batch.size);
    const t1 = performance.now();
    // Only the trainable gradients may travel in 16 bits (--compress): statistics, loss, count and health stay exact.
    const reduced = await this.reducer.allReduce(this.buffer, step, { compressible: layout.paramCount });
    const t2 = performance.now();
    try {
      const anomaly = this.checked ? this.judge(reduced, step) : undefined;
      if (anomaly) {
        // Nothing of a skipped step may reach a later one, error-feedback residuals included.
        this.reducer.discardCarry?.();
        const count = reduced[layout.countIndex]!;
        return { loss: count > 0 ? reduced[layout.lossIndex]! / count : NaN, globalCount: count, anomaly, computeMs: t1 - t0, allReduceMs: t2 - t1, applyMs: 0 };
      }
      const { loss, count } = this.replica.applyReduced(reduced, lr, step);
      const t3 = performance.now();
      return { loss, globalCount: count, computeMs: t1 - t0, allReduceMs: t2 - t1, applyMs: t3 - t2 };
    } catch (err) {
      // GRADIENT_ANOMALY, NON_FINITE_GRADIENT: this sum is not applied either.
      this.reducer.discardCarry?.();
      throw err;
    }
  }

  /** The verdict on the reduced buffer: identical on every rank, since every rank holds the same bits. */
  private judge(reduced: Float32Array, step: number): GradientAnomaly | undefined {
    const { layout } = this.replica;
    const { worldSize, wireRoundoff } = this.reducer;
    const anomaly = detectAnomaly(readHealth(reduced, layout, worldSize), this.policy.anomalyFactor, gradientNorm(reduced, layout.paramCount), sumTolerance(worldSize, wireRoundoff));
    if (!anomaly) return undefined;
    const who = anomaly.ranks.length > 0 ? `rank ${anomaly.ranks.join(', ')}` : 'an unnamed rank';
    const details = { step, ranks: anomaly.ranks, reasons: anomaly.reasons, onAnomaly: this.policy.onAnomaly };
    if (this.policy.onAnomaly === 'fail') {
      throw new MnistDdpError('GRADIENT_ANOMALY', `step ${step}: anomalous gradients from ${who}: ${anomaly.reasons.join('; ')}. Nothing was applied; check that worker (or run with --on-anomaly skip or evict)`, details);
    }
    this.log?.warn(details, `step ${step} skipped on every rank: anomalous gradients from ${who}: ${anomaly.reasons.join('; ')}${this.policy.onAnomaly === 'evict' && anomaly.ranks.length > 0 ? '; asking the coordinator to evict it' : ''}`);
    return anomaly;
  }
}
