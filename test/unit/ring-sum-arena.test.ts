import { describe, expect, it } from 'vitest';
import { SumArena } from '../../src/worker/ring/sum-arena.js';
import { randomFloats } from '../helpers/random.js';

function bits(a: Float32Array): Uint32Array {
  return new Uint32Array(a.buffer, a.byteOffset, a.length);
}

function expectSameBits(actual: Float32Array, expected: Float32Array): void {
  expect(actual.length).toBe(expected.length);
  expect(Buffer.compare(Buffer.from(actual.buffer, actual.byteOffset, actual.byteLength), Buffer.from(expected.buffer, expected.byteOffset, expected.byteLength))).toBe(0);
}

/** The reference: a float32 add per element, as the plain JS loop does it. */
function plainSum(a: Float32Array, b: Float32Array): Float32Array {
  const out = new Float32Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = (a[i] ?? 0) + (b[i] ?? 0);
  return out;
}

describe('SumArena (ring reduce-scatter add)', () => {
  // Lengths below, at and above the 32 Ki-float block, with SIMD tails of every size.
  const lengths = [0, 1, 3, 15, 16, 17, 1000, 32 * 1024, 32 * 1024 + 5, 100_003];

  it.each(lengths)('adds %i floats bit-identically to the JS loop: through the scratch, into staging, and in place at home', (n) => {
    const target = randomFloats(n, n + 1);
    const source = randomFloats(n, n + 2);
    const expected = plainSum(target, source);
    const arena = new SumArena(n, n + 8);

    const viaScratch = target.slice();
    arena.sumInto(viaScratch, source);
    expectSameBits(viaScratch, expected);

    const viaStaging = target.slice();
    const out = arena.staging[1].subarray(8, 8 + n);
    arena.sumInto(viaStaging, source, out);
    expectSameBits(viaStaging, expected);
    expectSameBits(out, expected);

    // The caller's buffer in the arena's memory (RingAllReducer.allocate): summed where it is, with and without out,
    // at an offset; the memory around the target and out keeps its sentinel (7).
    const home = new SumArena(n + 16, n + 8);
    home.home.fill(7);
    home.staging[0].fill(7);
    home.staging[1].fill(7);
    const inHome = home.home.subarray(5, 5 + n);
    const homeOut = home.staging[1].subarray(8, 8 + n);
    inHome.set(target);
    home.sumInto(inHome, source);
    expectSameBits(inHome, expected);
    inHome.set(target);
    home.sumInto(inHome, source, homeOut);
    expectSameBits(inHome, expected);
    expectSameBits(homeOut, expected);
    const untouched = [home.home.subarray(0, 5), home.home.subarray(5 + n), home.staging[0], home.staging[1].subarray(0, 8)];
    for (const region of untouched) expect(region.every((x) => x === 7)).toBe(true);
  });

  it('alternates its two staging regions', () => {
    const arena = new SumArena(0, 4);
    const [first, second, third] = [arena.nextStaging(), arena.nextStaging(), arena.nextStaging()];
    expect(first).toBe(arena.staging[0]);
    expect(second).toBe(arena.staging[1]);
    expect(third).toBe(arena.staging[0]);
  });

  it('keeps NaN, infinities, signed zeros and subnormals as float32 addition does', () => {
    const words = [0x7fc00001, 0x7f800000, 0xff800000, 0x80000000, 0x00000001, 0x007fffff, 0x3f800000, 0x7f7fffff];
    const target = new Float32Array(new Uint32Array(words).buffer);
    const source = new Float32Array(new Uint32Array([0, 0x7f800000, 0x3f800000, 0x80000000, 0x00000001, 0x00000001, 0x33800000, 0x7f7fffff]).buffer);
    const expected = plainSum(target, source);
    const arena = new SumArena(0, words.length);
    const sum = target.slice();
    arena.sumInto(sum, source, arena.staging[0]);
    // NaN payloads may differ between the two; every other result must match bit for bit.
    sum.forEach((x, i) => (Number.isNaN(x) ? expect(expected[i]).toBeNaN() : expect(bits(sum)[i]).toBe(bits(expected)[i])));
  });

  const INVARIANT = expect.objectContaining({ code: 'INVARIANT_VIOLATED' });

  it('refuses an output outside its memory and mismatched lengths', () => {
    const arena = new SumArena(0, 16);
    expect(() => arena.sumInto(new Float32Array(4), new Float32Array(4), new Float32Array(4))).toThrow(INVARIANT);
    expect(() => arena.sumInto(new Float32Array(4), new Float32Array(4), arena.staging[0].subarray(0, 3))).toThrow(INVARIANT);
    expect(() => arena.sumInto(new Float32Array(4), new Float32Array(5))).toThrow(INVARIANT);
    // In place, out must not overlap the target (the add reads the target while writing out).
    const home = new SumArena(8, 8);
    expect(() => home.sumInto(home.home.subarray(0, 4), new Float32Array(4), home.home.subarray(2, 6))).toThrow(/overlap/);
    expect(() => home.sumInto(home.home.subarray(0, 4), new Float32Array(4), home.home.subarray(2, 6))).toThrow(INVARIANT);
  });
});
