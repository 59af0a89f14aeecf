/*
 * Inverted dropout with the per-sample masks of src/shared/train/dropout.ts, drawn in the kernel instead of in
 * JavaScript and never stored: y = x * m where m is 1 / (1 - rate) for a kept unit and 0 for a dropped one (so NaN
 * and Inf in x stay non-finite, as in x * mask). The mask is a function of (seed, the sample's key, the element's
 * index) only, murmur3's 32-bit finaliser over a counter; dropout is linear in x, so the same call applied to dy is
 * its gradient. train/dropout.ts holds the reference in JavaScript; the test checks that both give the same bits.
 */
#include "kernels.h"

/* 2^32 / golden ratio: the counter's Weyl step, which spreads consecutive indices over the finaliser's input. */
#define GOLDEN 0x9e3779b9u
/* xxHash's PRIME32_4, an odd constant: mixes a key's high 32 bits into its low ones. */
#define KEY_HIGH_MIX 0x27d4eb2fu

static inline unsigned fmix32(unsigned h) {
  h ^= h >> 16;
  h *= 0x85ebca6bu;
  h ^= h >> 13;
  h *= 0xc2b2ae35u;
  return h ^ (h >> 16);
}

ALWAYS_INLINE v128_t fmix32x4(v128_t h) {
  h = wasm_v128_xor(h, wasm_u32x4_shr(h, 16));
  h = wasm_i32x4_mul(h, wasm_i32x4_splat((int)0x85ebca6bu));
  h = wasm_v128_xor(h, wasm_u32x4_shr(h, 13));
  h = wasm_i32x4_mul(h, wasm_i32x4_splat((int)0xc2b2ae35u));
  return wasm_v128_xor(h, wasm_u32x4_shr(h, 16));
}

/*
 * y[samples, per_sample] <- x * mask. Sample s has key first_key + s (first_key = key_high * 2^32 + key_low); a unit
 * is kept when the top 24 bits of its hash are below `threshold` (round((1 - rate) * 2^24)); seed_mix is the layer's
 * mixed seed (train/dropout.ts dropoutParams).
 */
EXPORT(dropout) void dropout(const float* x, float* y, int samples, int per_sample, unsigned seed_mix, unsigned key_low, unsigned key_high, int threshold, float scale) {
  const unsigned long long first_key = ((unsigned long long)key_high << 32) | key_low;
  const v128_t lane_offsets = wasm_i32x4_make(0, (int)GOLDEN, (int)(2u * GOLDEN), (int)(3u * GOLDEN));
  const v128_t step = wasm_i32x4_splat((int)(4u * GOLDEN)), limit = wasm_i32x4_splat(threshold);
  const v128_t keep_value = wasm_f32x4_splat(scale), zero = wasm_f32x4_splat(0.0f);
  for (int s = 0; s < samples; s++) {
    const unsigned long long key = first_key + (unsigned)s;
    const unsigned sample_mix = fmix32(seed_mix ^ fmix32((unsigned)key ^ ((unsigned)(key >> 32) * KEY_HIGH_MIX)));
    const float* xs = x + (long)s * per_sample;
    float* ys = y + (long)s * per_sample;
    v128_t counter = wasm_i32x4_add(wasm_i32x4_splat((int)sample_mix), lane_offsets);
    int j = 0;
    for (; j + 4 <= per_sample; j += 4, counter = wasm_i32x4_add(counter, step)) {
      const v128_t keep = wasm_i32x4_lt(wasm_u32x4_shr(fmix32x4(counter), 8), limit);
      wasm_v128_store(ys + j, wasm_f32x4_mul(wasm_v128_load(xs + j), wasm_v128_bitselect(keep_value, zero, keep)));
    }
    for (; j < per_sample; j++) {
      const int keep = (int)(fmix32(sample_mix + (unsigned)j * GOLDEN) >> 8) < threshold;
      ys[j] = xs[j] * (keep ? scale : 0.0f);
    }
  }
}
