import { permutationFor } from './rng.js';

/**
 * Exactly-once sharding. Each epoch has one seeded order of the training indices. A step consumes the next
 * `count` entries of that order (count = worldSize × batchSize, or fewer at the end of the epoch), and the ranks
 * split that slice into contiguous pieces in rank order: sizes that differ by at most one (rankSlice), or the
 * per-rank counts a step plan names (shareSlice; --balance throughput gives faster ranks more). The coordinator only
 * tracks a cursor into the epoch order, so when the world size or the shares change between two steps the remaining
 * samples are simply split among the new ranks: no sample is dropped, padded or used twice.
 */
export function epochOrder(train: Int32Array, seed: number, epoch: number): Int32Array {
  const perm = permutationFor(seed, epoch, train.length);
  const order = new Int32Array(train.length);
  for (let i = 0; i < perm.length; i++) order[i] = train[perm[i]!]!;
  return order;
}

/** [start, end) positions in the epoch order that `rank` of `worldSize` handles for a step at `cursor`. */
export function rankSlice(cursor: number, count: number, rank: number, worldSize: number): [number, number] {
  return [cursor + Math.floor((rank * count) / worldSize), cursor + Math.floor(((rank + 1) * count) / worldSize)];
}

export function stepCount(epochSize: number, cursor: number, worldSize: number, batchSize: number): number {
  return Math.min(worldSize * batchSize, epochSize - cursor);
}

/** Contiguous evaluation ranges per rank, exact counts, no padding. */
export function evalSlice(total: number, rank: number, worldSize: number): [number, number] {
  return rankSlice(0, total, rank, worldSize);
}

/**
 * How a step's global batch is split among the ranks (--balance): `equal` (rankSlice), `throughput` (each rank's
 * share proportional to its measured samples/s, coordinator/balance.ts), or `auto`: throughput when the ring's
 * workers train on different devices (backend and GPU adapter), equal otherwise.
 */
export const BALANCE_MODES = ['auto', 'throughput', 'equal'] as const;
export type BalanceMode = (typeof BALANCE_MODES)[number];

/**
 * The most samples one rank is given per step: this many times --batch-size. --batch-size is what an operator sized
 * each worker's memory for; a fast rank may take a few times that, not the whole global batch of a large ring, and
 * one optimistic measurement cannot hand it everything.
 */
export const MAX_SHARE_FACTOR = 4;

export function maxShare(batchSize: number): number {
  return MAX_SHARE_FACTOR * batchSize;
}

/** [start, end) positions in the epoch order that `rank` handles when the step's ranks take `shares` samples each. */
export function shareSlice(cursor: number, shares: readonly number[], rank: number): [number, number] {
  let start = cursor;
  for (let r = 0; r < rank; r++) start += shares[r]!;
  return [start, start + shares[rank]!];
}

/**
 * Splits `total` into integers proportional to `weights` (all > 0), each in [min, max]: the real-valued split
 * x_i = clamp(λ·w_i, min, max) with λ chosen so the x_i sum to `total` (a rank clamped at a bound gives its excess
 * or deficit to the others in proportion), then largest-remainder rounding (ties to the lower rank). The result
 * sums to `total` exactly and is a pure function of its arguments, so every party computes the same split.
 * Throws RangeError when no split fits (min·n > total or max·n < total).
 */
export function apportion(total: number, weights: readonly number[], { min = 0, max = Infinity }: { min?: number; max?: number } = {}): number[] {
  const n = weights.length;
  if (!Number.isInteger(total) || total < 0 || n === 0) throw new RangeError(`apportion: ${total} samples over ${n} ranks`);
  if (weights.some((w) => !(w > 0 && Number.isFinite(w)))) throw new RangeError(`apportion: weights must be positive and finite, got ${weights.join(', ')}`);
  if (min * n > total || max * n < total) throw new RangeError(`apportion: ${total} samples cannot be split over ${n} ranks with each in [${min}, ${max}]`);
  const clamp = (v: number): number => Math.min(max, Math.max(min, v));
  const sumAt = (lambda: number): number => weights.reduce((a, w) => a + clamp(lambda * w), 0);
  // sumAt is continuous, non-decreasing and linear between the breakpoints where some rank meets a bound: find the
  // segment that reaches `total` and interpolate in it. Past the last breakpoint only an unbounded max grows.
  const breaks = [0, ...weights.flatMap((w) => [min / w, max / w]).filter(Number.isFinite)].sort((a, b) => a - b);
  let lambda = breaks.at(-1)!;
  if (sumAt(0) >= total) lambda = 0;
  else {
    for (let j = 1; j < breaks.length; j++) {
      const lo = breaks[j - 1]!;
      const hi = breaks[j]!;
      const sHi = sumAt(hi);
      if (sHi < total) continue;
      const sLo = sumAt(lo);
      lambda = lo + ((total - sLo) * (hi - lo)) / (sHi - sLo);
      break;
    }
    const growing = weights.reduce((a, w) => a + (lambda * w < max ? w : 0), 0);
    if (sumAt(lambda) < total && growing > 0) lambda += (total - sumAt(lambda)) / growing;
  }
  const exact = weights.map((w) => clamp(lambda * w));
  const shares = exact.map((x) => clamp(Math.floor(x + 1e-9)));
  let missing = total - shares.reduce((a, b) => a + b, 0);
  // Largest remainders first; float error may leave `missing` negative, then the smallest remainders give one back.
  const byRemainder = exact.map((x, i) => ({ i, rest: x - shares[i]! })).sort((a, b) => b.rest - a.rest || a.i - b.i);
  for (const { i } of byRemainder) {
    if (missing <= 0) break;
    if (shares[i]! >= max) continue;
    shares[i]! += 1;
    missing--;
  }
  for (const { i } of byRemainder.reverse()) {
    if (missing >= 0) break;
    if (shares[i]! <= min) continue;
    shares[i]! -= 1;
    missing++;
  }
  return shares;
}

/**
 * The per-rank counts of a step of `count` samples under the generation's shares (which sum to a full step): the
 * shares themselves, or for the shorter last step of an epoch the same proportions (ranks may get nothing).
 */
export function stepShares(count: number, shares: readonly number[]): number[] {
  const full = shares.reduce((a, b) => a + b, 0);
  if (count > full) throw new RangeError(`stepShares: a step of ${count} samples exceeds the full step of ${full}`);
  // Proportional with nothing clamped: each count ≤ ceil(count · share / full) ≤ share.
  return count === full ? [...shares] : apportion(count, shares);
}
