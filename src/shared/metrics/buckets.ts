/**
 * Histogram bucket layouts. Both are roughly 1-2-5 per decade so that histogram_quantile interpolates within
 * ~2.5x of the true value everywhere in the range, at 11-13 series per label set.
 */

/** Training step phases: a fast compute/apply step is ~1 ms, a slow CPU step on a large batch ~2 s. */
export const STEP_SECONDS_BUCKETS: readonly number[] = Object.freeze([
  0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2,
]);

/** One all-reduce: ~0.1 ms for a tiny model over loopback ipc, up to ~1 s for large models on a busy network. */
export const ALLREDUCE_SECONDS_BUCKETS: readonly number[] = Object.freeze([
  0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1,
]);
