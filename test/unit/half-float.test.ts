import { describe, expect, it } from 'vitest';
import {
  bf16FromFloat32Bits, decodeHalves, encodeHalves, encodeHalvesWithError, fp16FromFloat32Bits, FP16_MAX, UNIT_ROUNDOFF, type HalfFormat,
} from '../../src/shared/wire/half-float.js';
import { randomFloats } from '../helpers/random.js';

// Issue #16 item 5: the 16-bit wire formats of --compress.

const word = new Uint32Array(1);
const float = new Float32Array(word.buffer);

function bitsOfFloat(v: number): number {
  float[0] = v;
  return word[0]!;
}

function floatOfBits(b: number): number {
  word[0] = b;
  return float[0]!;
}

function decodeOne(format: HalfFormat, h: number): number {
  const out = new Float32Array(1);
  decodeHalves(format, new Uint16Array([h]), out);
  return out[0]!;
}

/** IEEE binary16 by its definition, in float64: the reference the table-driven decoder is checked against. */
function fp16Value(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const e = (h >>> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0x1f) return m === 0 ? sign * Infinity : NaN;
  return e === 0 ? sign * m * 2 ** -24 : sign * (1 + m / 1024) * 2 ** (e - 15);
}

describe('fp16 encoding (round to nearest even, from float32 bits)', () => {
  // [float32 input, expected fp16 bits]: values cross-checked against numpy's float32 → float16 cast.
  const cases: [number, number][] = [
    [0, 0x0000], [-0, 0x8000], [1, 0x3c00], [-2, 0xc000], [0.5, 0x3800], [1 / 3, 0x3555], [65504, 0x7bff],
    [2 ** -14, 0x0400], // smallest normal
    [2 ** -24, 0x0001], // smallest subnormal
    [2 ** -14 - 2 ** -24, 0x03ff], // largest subnormal
    [3 * 2 ** -25, 0x0002], // subnormal tie 1.5 ulp → even (2)
    [5 * 2 ** -25, 0x0002], // subnormal tie 2.5 ulp → even (2)
    [2 ** -25, 0x0000], // half the smallest subnormal: tie → 0
    [Math.fround(2 ** -25 * 1.0000001), 0x0001], // just above it → smallest subnormal
    [2 ** -26, 0x0000],
    [1 + 2 ** -11, 0x3c00], // tie between 1 and 1 + 2^-10 → even (1)
    [1 + 3 * 2 ** -11, 0x3c02], // tie → even (1 + 2^-9)
    [Math.fround(1 + 2 ** -11 + 2 ** -20), 0x3c01], // just above the tie → up
    [2047 / 1024 + 1 / 2048, 0x4000], // mantissa carry into the exponent: 1.99951171875 + half ulp → 2
  ];
  it.each(cases)('encodes %d as %i', (value, expected) => {
    expect(fp16FromFloat32Bits(bitsOfFloat(value))).toBe(expected);
  });

  it('saturates finite values beyond ±65504 (the tie at 65520 too), and keeps ±Infinity and NaN', () => {
    for (const v of [65505, 65519, 65520, 1e6, 3.4e38]) {
      expect(fp16FromFloat32Bits(bitsOfFloat(v))).toBe(0x7bff);
      expect(fp16FromFloat32Bits(bitsOfFloat(-v))).toBe(0xfbff);
    }
    expect(fp16FromFloat32Bits(bitsOfFloat(Infinity))).toBe(0x7c00);
    expect(fp16FromFloat32Bits(bitsOfFloat(-Infinity))).toBe(0xfc00);
    // Every NaN stays NaN, also one whose payload lies only in the 13 bits fp16 drops.
    for (const nan of [0x7fc00000, 0x7f800001, 0xff800001, 0x7fffffff]) expect(Number.isNaN(decodeOne('fp16', fp16FromFloat32Bits(nan)))).toBe(true);
  });

  it('decodes every one of the 65 536 values exactly, and re-encodes each to itself', () => {
    const all = new Uint16Array(65536).map((_, h) => h);
    const out = new Float32Array(65536);
    decodeHalves('fp16', all, out);
    const outBits = new Uint32Array(out.buffer);
    for (let h = 0; h < 65536; h++) {
      const expected = fp16Value(h);
      if (Number.isNaN(expected)) {
        expect(Number.isNaN(out[h])).toBe(true);
        continue;
      }
      expect(Object.is(out[h], expected)).toBe(true);
      expect(fp16FromFloat32Bits(outBits[h]!)).toBe(h);
    }
  });

  it('is the nearest fp16 value for random float32 inputs across the whole range (ties to even)', () => {
    const values = randomFloats(200_000, 7, -1, 1).map((v, i) => v * 2 ** ((i % 48) - 30));
    const halves = new Uint16Array(values.length);
    encodeHalves('fp16', values, halves);
    for (let i = 0; i < values.length; i++) {
      const v = values[i]!;
      const h = halves[i]!;
      if (Math.abs(v) > FP16_MAX) {
        expect(h & 0x7fff).toBe(0x7bff);
        continue;
      }
      const error = Math.abs(fp16Value(h) - v);
      // Neighbours in magnitude (same sign): neither is closer, and a tie went to the even one.
      for (const n of [h - 1, h + 1]) {
        if ((n & 0x7fff) > 0x7bff || (n & 0x8000) !== (h & 0x8000) || n < 0) continue;
        const other = Math.abs(fp16Value(n) - v);
        expect(error <= other).toBe(true);
        if (error === other) expect(h & 1).toBe(0);
      }
    }
  });
});

describe('bf16 encoding (round to nearest even, from float32 bits)', () => {
  const cases: [number, number][] = [
    [0, 0x0000], [-0, 0x8000], [1, 0x3f80], [-2, 0xc000], [1 / 3, 0x3eab], [Infinity, 0x7f80], [-Infinity, 0xff80],
    [floatOfBits(0x3f808000), 0x3f80], // tie → even
    [floatOfBits(0x3f818000), 0x3f82], // tie → even (up)
    [floatOfBits(0x3f808001), 0x3f81], // above the tie → up
    [floatOfBits(0x3f807fff), 0x3f80],
    [floatOfBits(0x00000001), 0x0000], // float32 subnormals round like the rest
    [floatOfBits(0x00018000), 0x0002],
    [floatOfBits(0x7f7f7fff), 0x7f7f], // largest value that rounds to the largest finite bf16
  ];
  it.each(cases)('encodes %d as %i', (value, expected) => {
    expect(bf16FromFloat32Bits(bitsOfFloat(value))).toBe(expected);
  });

  it('keeps NaN (even one whose payload lies in the dropped bits) and saturates finite values that would round to Infinity', () => {
    for (const nan of [0x7fc00000, 0x7f800001, 0xff800001, 0x7f80ffff]) expect(Number.isNaN(decodeOne('bf16', bf16FromFloat32Bits(nan)))).toBe(true);
    expect(bf16FromFloat32Bits(0x7f7f8000)).toBe(0x7f7f);
    expect(bf16FromFloat32Bits(0x7f7fffff)).toBe(0x7f7f);
    expect(bf16FromFloat32Bits(0xff7fffff)).toBe(0xff7f);
  });

  it('decodes to the upper half of a float32 and re-encodes every value to itself', () => {
    const all = new Uint16Array(65536).map((_, h) => h);
    const out = new Float32Array(65536);
    decodeHalves('bf16', all, out);
    const outBits = new Uint32Array(out.buffer);
    for (let h = 0; h < 65536; h++) {
      expect(outBits[h]).toBe(h << 16 >>> 0);
      if (!Number.isNaN(out[h])) expect(bf16FromFloat32Bits(outBits[h]!)).toBe(h);
    }
  });
});

describe('encoding with error feedback', () => {
  it.each<HalfFormat>(['fp16', 'bf16'])('%s: decoded + the error added to the residual = the value, within float32 rounding of the residual', (format) => {
    const values = randomFloats(10_000, 3, -100, 100);
    values[5] = 1e6; // saturates in fp16
    values[6] = 1e-9; // underflows in fp16
    const residual = new Float32Array(values.length).fill(0.25);
    const halves = new Uint16Array(values.length);
    encodeHalvesWithError(format, values, halves, residual, false);
    const decoded = new Float32Array(values.length);
    decodeHalves(format, halves, decoded);
    for (let i = 0; i < values.length; i++) {
      const error = values[i]! - decoded[i]!;
      expect(Math.abs(residual[i]! - 0.25 - error)).toBeLessThanOrEqual(2 ** -23 * Math.abs(residual[i]!));
      if (i !== 5 && i !== 6) expect(Math.abs(error)).toBeLessThanOrEqual(UNIT_ROUNDOFF[format] * Math.abs(values[i]!));
    }
    if (format === 'fp16') {
      expect(decoded[5]).toBe(FP16_MAX);
      expect(residual[5]).toBe(0.25 + 1e6 - FP16_MAX);
      expect(decoded[6]).toBe(0);
    }
  });

  it('adds nothing to the residual for NaN and ±Infinity, which stay non-finite on the wire', () => {
    const values = new Float32Array([NaN, Infinity, -Infinity, 1.1]);
    const residual = new Float32Array(4);
    const halves = new Uint16Array(4);
    for (const format of ['fp16', 'bf16'] as const) {
      encodeHalvesWithError(format, values, halves, residual, false);
      const decoded = new Float32Array(4);
      decodeHalves(format, halves, decoded);
      expect(Number.isNaN(decoded[0])).toBe(true);
      expect(decoded[1]).toBe(Infinity);
      expect(decoded[2]).toBe(-Infinity);
      expect(Array.from(residual.subarray(0, 3))).toEqual([0, 0, 0]);
      expect(Number.isFinite(residual[3])).toBe(true);
    }
  });

  it('with writeBack leaves exactly the decoded bits in place, and encoding them again loses nothing', () => {
    for (const format of ['fp16', 'bf16'] as const) {
      const values = randomFloats(5000, 11, -3, 3);
      const halves = new Uint16Array(values.length);
      encodeHalvesWithError(format, values, halves, new Float32Array(values.length), true);
      const decoded = new Float32Array(values.length);
      decodeHalves(format, halves, decoded);
      expect(Buffer.from(values.buffer).equals(Buffer.from(decoded.buffer))).toBe(true);
      const again = new Uint16Array(values.length);
      const residual = new Float32Array(values.length);
      encodeHalvesWithError(format, values, again, residual, false);
      expect(Buffer.from(again.buffer).equals(Buffer.from(halves.buffer))).toBe(true);
      expect(residual.every((r) => r === 0)).toBe(true);
    }
  });
});
