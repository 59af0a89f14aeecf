import { median } from '../core/stats.js';
import type { ParamLayout } from '../model/layout.js';

/**
 * Gradient sanity across ranks (issue #15 item 5). With more than one rank the all-reduce buffer carries, after the
 * layout's [gradients | synced | loss | count], HEALTH_SLOTS_PER_RANK slots per rank: rank r writes its own
 * [gradient L2 norm, samples, 1 if its loss is not finite] into its slots and leaves every other rank's at zero, so
 * after the SUM every rank holds every rank's report without another message. Every rank then reads the same
 * bit-identical buffer and so reaches the same verdict: a skipped step is skipped everywhere.
 *
 * The slots are what each rank says about itself. One that under-reports its norm is caught by the triangle
 * inequality (the sum's norm cannot exceed the sum of the norms), though not named. One that writes into another
 * rank's slots could get that rank named; evict trusts the slots for that reason only as far as CURVE authenticates
 * who takes part.
 */

/** What a rank does about an anomaly: fail the run, skip the step everywhere, or skip it and evict the rank named. */
export const ANOMALY_RESPONSES = ['fail', 'skip', 'evict'] as const;
export type AnomalyResponse = (typeof ANOMALY_RESPONSES)[number];

export const HEALTH_SLOTS_PER_RANK = 3;
const NORM = 0;
const SAMPLES = 1;
const LOSS_NOT_FINITE = 2;
/**
 * Shards smaller than this are judged against factor² instead of factor: one or two samples' gradient norm
 * legitimately differs from another's by far more than a batch's (measured on cnn, seed 5, 60 steps: at most 5.3x
 * the median for shards of 21-22 samples, 88x for an epoch tail split 2/2/1). 1e30 gradients still stand out.
 */
export const MIN_SAMPLES_FOR_FACTOR = 4;
/** Rounding slack for the triangle-inequality check: float32 sums of N terms are off by far less than this. */
const SUM_TOLERANCE = 1e-3;

/**
 * The triangle-inequality check's relative slack on a ring whose wire rounds to `wireRoundoff` (AllReducer; 0: exact
 * float32). With error feedback the applied sum is Σ(gᵢ + rᵢ) − Σrᵢ', where each rank's residuals r, r' hold at most
 * one rounding per float of values bounded by the sum of magnitudes; the ranks report ‖gᵢ‖ only, so the sum's norm
 * may exceed their total by up to about 3N·roundoff of it (realistic errors, in random directions, stay far below).
 */
export function sumTolerance(worldSize: number, wireRoundoff = 0): number {
  return SUM_TOLERANCE + 3 * worldSize * wireRoundoff;
}

/** Floats the health report adds to the all-reduce buffer: none for one rank (nothing to compare with). */
export function healthLength(worldSize: number): number {
  return worldSize > 1 ? HEALTH_SLOTS_PER_RANK * worldSize : 0;
}

/** L2 norm of `buf[0, n)`, summed in float64 (a float32 square of 1e20 would overflow). */
export function gradientNorm(buf: Float32Array, n: number): number {
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const v = buf[i]!;
    sum += v * v;
  }
  return Math.sqrt(sum);
}

/**
 * Writes this rank's report into its slots of `buf` (filled by computeGradients: its health slots are still zero).
 * The norm covers the trainable gradients, the part the optimiser applies.
 */
export function writeHealth(buf: Float32Array, layout: ParamLayout, rank: number, samples: number): void {
  const at = layout.bufferLength + HEALTH_SLOTS_PER_RANK * rank;
  buf[at + NORM] = gradientNorm(buf, layout.paramCount);
  buf[at + SAMPLES] = samples;
  buf[at + LOSS_NOT_FINITE] = Number.isFinite(buf[layout.lossIndex]!) ? 0 : 1;
}

export interface RankHealth {
  rank: number;
  norm: number;
  samples: number;
  lossFinite: boolean;
}

/** Every rank's report, read from an all-reduced buffer. */
export function readHealth(reduced: Float32Array, layout: ParamLayout, worldSize: number): RankHealth[] {
  return Array.from({ length: worldSize }, (_, rank) => {
    const at = layout.bufferLength + HEALTH_SLOTS_PER_RANK * rank;
    return { rank, norm: reduced[at + NORM]!, samples: reduced[at + SAMPLES]!, lossFinite: reduced[at + LOSS_NOT_FINITE] === 0 };
  });
}

export interface GradientAnomaly {
  /** Ranks named, ascending; empty when the reports are inconsistent but no rank can be named. */
  ranks: number[];
  /** One sentence per finding, each naming its rank. */
  reasons: string[];
}

/**
 * Judges one step's reports. `reducedNorm` is the norm of the summed trainable gradients. A non-finite gradient is
 * left to the NaN guard (NON_FINITE_GRADIENT, applyReduced): no verdict then. A rank is named when its loss is not
 * finite, when it sent a gradient without samples, or (with at least three ranks holding samples) when its gradient
 * norm per sample is more than `factor` times the median of all ranks' (factor² for a shard under
 * MIN_SAMPLES_FOR_FACTOR). Per sample, because each rank sends the gradient of its SUMMED loss and shards differ in
 * size (the last step of an epoch may be split 2/2/1).
 */
export function detectAnomaly(health: readonly RankHealth[], factor: number, reducedNorm: number, tolerance = SUM_TOLERANCE): GradientAnomaly | undefined {
  if (!Number.isFinite(reducedNorm) || health.some((h) => !Number.isFinite(h.norm))) return undefined;
  const named = new Map<number, string>();
  const name = (rank: number, reason: string): void => {
    if (!named.has(rank)) named.set(rank, `rank ${rank} ${reason}`);
  };
  for (const h of health) {
    if (!h.lossFinite) name(h.rank, 'has a loss that is not finite');
    else if (h.norm < 0 || h.samples < 0) name(h.rank, `reported an impossible gradient norm ${h.norm} over ${h.samples} samples`);
    else if (h.samples === 0 && h.norm > 0) name(h.rank, `sent a gradient of norm ${h.norm.toPrecision(3)} without samples`);
  }
  const perSample = health.filter((h) => h.samples > 0 && h.norm >= 0).map((h) => ({ rank: h.rank, samples: h.samples, value: h.norm / h.samples }));
  if (perSample.length >= 3) {
    const mid = median(perSample.map((p) => p.value));
    for (const p of perSample) {
      const limit = p.samples < MIN_SAMPLES_FOR_FACTOR ? factor * factor : factor;
      if (mid > 0 && p.value > limit * mid) {
        name(p.rank, `has a gradient norm per sample of ${p.value.toPrecision(3)}, ${(p.value / mid).toPrecision(3)}x the median ${mid.toPrecision(3)} (limit ${limit}x)`);
      }
    }
  }
  const ranks = [...named.keys()].sort((a, b) => a - b);
  const reported = health.reduce((sum, h) => sum + Math.max(h.norm, 0), 0);
  if (ranks.length === 0 && reducedNorm > reported * (1 + tolerance) + 1e-6) {
    return { ranks, reasons: [`the summed gradient has norm ${reducedNorm.toPrecision(3)}, more than the ${reported.toPrecision(3)} the ranks reported together: a rank misreported its norm`] };
  }
  return ranks.length > 0 ? { ranks, reasons: ranks.map((r) => named.get(r)!) } : undefined;
}
