/**
 * Deterministic pseudo-random floats in [lo, hi), so a failing test reproduces: xorshift32 (Marsaglia 13/17/5) from
 * `seed` (0 is taken as 1, xorshift's one fixed point), each state mapped to lo + (hi − lo) · state / 2³².
 */
export function randomFloats(length: number, seed: number, lo = -1, hi = 1): Float32Array {
  const out = new Float32Array(length);
  let state = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    out[i] = lo + (hi - lo) * (state / 2 ** 32);
  }
  return out;
}
