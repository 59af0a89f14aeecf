/**
 * The order statistics every figure of the project is reported with: the benches' p50/p90, the report's median
 * samples/s, `bench`'s median of windows.
 */

/**
 * The q-quantile (0 ≤ q ≤ 1) of `values` by linear interpolation between the two nearest order statistics
 * (Hyndman & Fan type 7, numpy's and R's default): position (n − 1)·q of the sorted values. q = 0.5 is the median
 * (the middle value, or the mean of the middle two); q = 1 is the maximum. NaN for no values.
 */
export function quantile(values: readonly number[], q: number): number {
  const s = [...values].sort((a, b) => a - b);
  if (s.length === 0) return Number.NaN;
  const pos = (s.length - 1) * Math.min(1, Math.max(0, q));
  const lo = Math.floor(pos);
  const hi = Math.min(s.length - 1, lo + 1);
  return s[lo]! + (pos - lo) * (s[hi]! - s[lo]!);
}

export function median(values: readonly number[]): number {
  return quantile(values, 0.5);
}

/** `x` rounded to `digits` decimals, for printed figures. */
export function roundTo(x: number, digits: number): number {
  return Math.round(x * 10 ** digits) / 10 ** digits;
}
