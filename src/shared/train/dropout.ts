/**
 * Dropout masks for training, keyed by sample.
 *
 * tfjs-layers' Dropout with a seed (every zoo model seeds its layers, for reproducible runs) builds a fresh
 * generator from that seed at every call, so it drops the same units at every step: a fixed sparsification, not
 * dropout. Here each sample's mask is drawn from (layer seed, the sample's key, element): a new mask per sample and
 * step, the same one for the same sample wherever it is computed (any rank, any pass of a split batch, any backend),
 * and reproducible from the run's seed. Keys are consecutive over a batch's samples (Batch.sampleKey).
 *
 * The generator is a counter-based hash (murmur3's 32-bit finaliser over sample and element), so no state is
 * carried between calls. dropoutMask draws it in JavaScript, for every backend; on wasm with mnist-ddp's kernels the
 * dropout kernel (kernels/dropout.ts, native/dropout.c) draws the same bits as it applies them.
 */

/** murmur3's fmix32: a bijective 32-bit mix whose every output bit depends on every input bit. */
function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/** What a layer's masks depend on besides the sample's key and the element. */
export interface DropoutParams {
  /** A unit is kept when its 24-bit uniform draw u = h / 2^24 (exact in float32) is below keep: h < threshold. */
  threshold: number;
  /** The multiplier of a kept unit, 1 / (1 - rate) in float32. */
  scale: number;
  /** The layer's seed, mixed. */
  seedMix: number;
}

export function dropoutParams(rate: number, seed: number): DropoutParams {
  const keep = 1 - rate;
  return { threshold: Math.round(keep * 2 ** 24), scale: Math.fround(1 / keep), seedMix: fmix32(seed >>> 0 ^ 0x9e3779b9) };
}

/**
 * The multiplier of inverted dropout at `rate` for `samples` samples of `perSample` elements each: 1/(1 - rate) where
 * a unit is kept (probability 1 - rate), else 0. Sample i's mask depends only on (seed, firstKey + i).
 */
export function dropoutMask(samples: number, perSample: number, rate: number, seed: number, firstKey: number): Float32Array {
  const mask = new Float32Array(samples * perSample);
  const { threshold, scale, seedMix } = dropoutParams(rate, seed);
  for (let s = 0; s < samples; s++) {
    // Keys are sample positions in the run's stream: past 2^32 only their low and high words are mixed in.
    const key = firstKey + s;
    const sampleMix = fmix32(seedMix ^ fmix32((key >>> 0) ^ Math.imul(Math.floor(key / 2 ** 32), 0x27d4eb2f)));
    const row = s * perSample;
    for (let j = 0; j < perSample; j++) {
      const h = fmix32((sampleMix + Math.imul(j, 0x9e3779b9)) >>> 0) >>> 8;
      mask[row + j] = h < threshold ? scale : 0;
    }
  }
  return mask;
}
