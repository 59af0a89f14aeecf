/**
 * How many samples one forward/backward pass may hold (issue #13 item 4, batches up to 1024 per worker and more).
 *
 * tfjs keeps every activation of a pass for its backward pass, so a pass's memory grows linearly with its samples:
 * ≈ 0.8 MB per sample for `cnn` and ≈ 2 MB for `cnn-large` (tf.profile on wasm, where training-forward.ts runs batch
 * norm as one op; tfjs-layers' own batch-norm layers keep several batch-sized intermediates each: ≈ 6.6 MB). The wasm backend's heap is a 32-bit address space: tfjs-backend-wasm grows it to
 * 4 GiB at most, and near that limit its allocator hands out blocks that run past the end (a `cnn-large` step at
 * B=1024 failed with "memory access out of bounds" in the middle of a kernel). The cpu and webgpu backends have no
 * such ceiling, so only wasm batches are split.
 *
 * A batch larger than the limit is computed in passes of at most that many samples whose sums are added
 * (Replica.computeGradients): the gradient of the summed loss is exactly the sum over the passes for models without
 * batch statistics; with batch norm, each pass normalises over its own samples, as each rank does in data-parallel
 * training (no cross-rank batch norm here either).
 */

/** Tensor bytes a wasm pass may reach, as tf.profile counts them: half the 4 GiB heap, for weights and fragmentation. */
export const WASM_PASS_BUDGET_BYTES = 2 * 1024 ** 3;

/** Samples of the measuring pass. */
export const PROBE_SAMPLES = 16;

/**
 * Batches up to this many samples are computed in one pass without measuring: every zoo model's pass of this many
 * fits the budget (cnn-large, the largest: ≈ 0.85 GB even through tfjs-layers' own batch norm), and smaller batches, the default 64 among them, skip the probe.
 */
export const UNSPLIT_SAMPLES = 128;

/** The pass limit for a measured peak of `bytes` over a pass of `samples` (the weights' share counts as per-sample: a safe overestimate). */
export function passLimitFor(bytes: number, samples: number, budget = WASM_PASS_BUDGET_BYTES): number {
  const perSample = Math.max(1, bytes / samples);
  return Math.max(1, Math.floor(budget / perSample));
}

/** `total` samples in passes of at most `limit`, as equal as possible (larger first): 1000 at 400 → 334, 333, 333. */
export function passSizes(total: number, limit: number): number[] {
  if (total <= limit) return [total];
  const passes = Math.ceil(total / limit);
  const small = Math.floor(total / passes);
  const larger = total - small * passes;
  return Array.from({ length: passes }, (_, i) => small + (i < larger ? 1 : 0));
}
