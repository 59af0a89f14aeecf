import { MnistDdpError } from '../core/errors.js';

/**
 * Seeded PRNG: xoshiro128** (Blackman & Vigna), 128 bits of state held as four 32-bit words and nothing else.
 * Randomness in training is stateless: each stream is seeded from deriveSeed(seed, epoch, step, rank) and the like,
 * so checkpoints store only the run's seed and a resumed run derives the same streams. No RNG state is saved.
 */

/** Anything indexable and writable: arrays and typed arrays. */
export interface MutableIndexed<T> {
  readonly length: number;
  [index: number]: T;
}

const TWO_POW_32 = 4294967296;

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/** splitmix32 step: used to expand a seed into state words and to mix seed components. */
function splitmix32(x: number): number {
  let z = (x + 0x9e3779b9) | 0;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return (z ^ (z >>> 16)) >>> 0;
}

function checkSeedPart(part: number, what: string): void {
  if (!Number.isSafeInteger(part)) {
    throw new MnistDdpError('CONFIG_INVALID', `${what} must be a safe integer, got ${String(part)}`, { value: part });
  }
}

/**
 * Combines integers (e.g. seed, epoch, stream id) into one 32-bit seed. Order matters: (1, 2) ≠ (2, 1).
 * Accepts any safe integer, including negatives and values above 2^32 (both halves are mixed in).
 */
export function deriveSeed(...parts: number[]): number {
  let h = 0x6a09e667;
  for (const part of parts) {
    checkSeedPart(part, 'seed component');
    const lo = part >>> 0;
    const hi = Math.floor(part / TWO_POW_32) >>> 0;
    h = splitmix32(h ^ lo);
    h = splitmix32(h ^ hi);
  }
  return h;
}

export class Rng {
  /** The generator's whole state (protected for test/helpers/rng-state.ts, which snapshots it). */
  protected s0 = 0;
  protected s1 = 0;
  protected s2 = 0;
  protected s3 = 0;

  constructor(seed = 0) {
    checkSeedPart(seed, 'RNG seed');
    let x = deriveSeed(seed);
    x = splitmix32(x);
    this.s0 = x;
    x = splitmix32(x);
    this.s1 = x;
    x = splitmix32(x);
    this.s2 = x;
    x = splitmix32(x);
    this.s3 = x;
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) this.s0 = 1;
  }

  /** Uniform unsigned 32-bit integer. */
  nextUint32(): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5), 7), 9) >>> 0;
    const t = this.s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= this.s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotl(this.s3, 11);
    return result;
  }

  /** Uniform in [0, 1) with 32 bits of resolution. */
  nextFloat(): number {
    return this.nextUint32() / TWO_POW_32;
  }

  /** Uniform integer in [0, n), unbiased (rejection sampling). n must be an integer in 1..2^32. */
  nextInt(n: number): number {
    if (!Number.isInteger(n) || n < 1 || n > TWO_POW_32) {
      throw new RangeError(`nextInt(n) needs an integer n in 1..2^32, got ${n}`);
    }
    const limit = TWO_POW_32 - (TWO_POW_32 % n);
    let r = this.nextUint32();
    while (r >= limit) r = this.nextUint32();
    return r % n;
  }

  /** In-place Fisher–Yates shuffle; returns its argument. */
  shuffle<T, A extends MutableIndexed<T>>(items: A): A {
    for (let i = items.length - 1; i > 0; i--) {
      const j = this.nextInt(i + 1);
      const tmp = items[i] as T;
      items[i] = items[j] as T;
      items[j] = tmp;
    }
    return items;
  }

  /** A uniformly random permutation of 0..n-1. */
  permutation(n: number): Int32Array {
    if (!Number.isInteger(n) || n < 0 || n > 0x7fffffff) throw new RangeError(`permutation(n) needs an integer n >= 0, got ${n}`);
    const out = new Int32Array(n);
    for (let i = 0; i < n; i++) out[i] = i;
    return this.shuffle<number, Int32Array>(out);
  }
}

/**
 * The epoch's global sample order. A pure function of (seed, epoch, n): every worker and the coordinator compute
 * the same permutation independently, so shard plans never need to ship index lists.
 */
export function permutationFor(seed: number, epoch: number, n: number): Int32Array {
  return new Rng(deriveSeed(seed, epoch, 0x5eed)).permutation(n);
}
