import { MnistDdpError } from '../../src/shared/core/errors.js';
import { Rng } from '../../src/shared/data/rng.js';

const TWO_POW_32 = 4294967296;

export type RngState = [number, number, number, number];

/**
 * An Rng whose state can be read and restored, for tests that check a stream depends on the four state words only
 * (no hidden cache). The product never saves RNG state: its streams are derived from deriveSeed(...).
 */
export class SnapshotRng extends Rng {
  static fromState(state: readonly number[]): SnapshotRng {
    const rng = new SnapshotRng(0);
    rng.setState(state);
    return rng;
  }

  /** A copy of the full state: four unsigned 32-bit integers, JSON-safe. */
  getState(): RngState {
    return [this.s0 >>> 0, this.s1 >>> 0, this.s2 >>> 0, this.s3 >>> 0];
  }

  /** Restores a state from getState(); CHECKPOINT_INVALID unless it is four u32 words, not all zero. */
  setState(state: readonly number[]): void {
    const ok = state.length === 4 && state.every((w) => Number.isInteger(w) && w >= 0 && w < TWO_POW_32) && state.some((w) => w !== 0);
    if (!ok) {
      throw new MnistDdpError('CHECKPOINT_INVALID', `RNG state must be four unsigned 32-bit integers, not all zero; got ${JSON.stringify(state)}`, { state });
    }
    this.s0 = state[0]! | 0;
    this.s1 = state[1]! | 0;
    this.s2 = state[2]! | 0;
    this.s3 = state[3]! | 0;
  }
}

/** A normal sample (Box–Muller, cosine branch only, so nothing is cached between calls): two draws from `rng`. */
export function normalSample(rng: Rng, mean = 0, std = 1): number {
  const u1 = 1 - rng.nextFloat(); // (0, 1]: log is finite
  const u2 = rng.nextFloat();
  return mean + std * Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
}
