import { describe, expect, it } from 'vitest';
import { ChunkCompressor } from '../../src/worker/ring/chunk-compressor.js';
import { UNIT_ROUNDOFF } from '../../src/shared/wire/half-float.js';
import { randomFloats } from '../helpers/random.js';

// Issue #16 item 5: a compressed ring's chunk payloads and their error feedback.

function sameBits(a: Float32Array, b: Float32Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

describe('ChunkCompressor', () => {
  it('packs the compressible part of a chunk that straddles the boundary as 16-bit values and the rest as exact float32', () => {
    const c = new ChunkCompressor('bf16', 64);
    const buf = randomFloats(40, 1, -10, 10);
    const original = buf.slice();
    c.begin(buf, 25);
    const payload = c.encode(buf.subarray(20, 31), 20);
    // 5 halves in 3 words (the last half zero), then 6 floats.
    expect(payload.halves).toBe(5);
    expect(payload.data.length).toBe(3 + 6);
    expect(new Uint16Array(payload.data.buffer)[5]).toBe(0);
    const decoded = c.decode(payload, 20, 31);
    if (typeof decoded === 'string') throw new Error(decoded);
    expect(sameBits(decoded.subarray(5), original.subarray(25, 31))).toBe(true);
    for (let i = 0; i < 5; i++) expect(Math.abs(decoded[i]! - original[20 + i]!)).toBeLessThanOrEqual(UNIT_ROUNDOFF.bf16 * Math.abs(original[20 + i]!));
    // A chunk wholly past the boundary carries no halves; one wholly before it, only halves.
    expect(c.encode(buf.subarray(30, 40), 30)).toMatchObject({ halves: 0, data: buf.subarray(30, 40) });
    expect(c.encode(buf.subarray(0, 10), 0).halves).toBe(10);
  });

  it('refuses a payload that does not fit its chunk, naming what it carries', () => {
    const c = new ChunkCompressor('fp16', 64);
    c.begin(new Float32Array(40), 25);
    expect(c.decode({ data: new Float32Array(10) }, 0, 10)).toMatch(/carries no 16-bit values in 10 words, expected 10 in 5/);
    expect(c.decode({ data: new Float32Array(5), halves: 9 }, 0, 10)).toMatch(/carries 9 16-bit values/);
    expect(c.decode({ data: new Float32Array(4), halves: 10 }, 0, 10)).toMatch(/in 4 words, expected 10 in 5/);
  });

  it('keeps the owner\'s copy as the receivers decode it, and forwards a copy of received memory', () => {
    const c = new ChunkCompressor('fp16', 64);
    const sum = randomFloats(16, 2, -1, 1);
    c.begin(sum, 16);
    const payload = c.encode(sum, 0, true);
    const decoded = c.decode(payload, 0, 16);
    if (typeof decoded === 'string') throw new Error(decoded);
    expect(sameBits(sum, decoded)).toBe(true);
    const forwarded = c.forward(payload);
    expect(forwarded.data).not.toBe(payload.data);
    expect(forwarded.data.buffer).not.toBe(payload.data.buffer);
    expect(sameBits(forwarded.data, payload.data)).toBe(true);
  });

  it.each(['fp16', 'bf16'] as const)('%s: over many steps the decoded values sum to the true sum minus the residual (error feedback)', (format) => {
    const c = new ChunkCompressor(format, 1024);
    const gradient = randomFloats(1000, 9, -1e-3, 1e-3);
    gradient[0] = 1e-9; // below fp16's smallest subnormal: without feedback it would never arrive
    const applied = new Float64Array(gradient.length);
    const steps = 300;
    const buf = new Float32Array(gradient.length);
    for (let step = 0; step < steps; step++) {
      buf.set(gradient);
      c.begin(buf, buf.length);
      const decoded = c.decode(c.encode(buf, 0), 0, buf.length);
      if (typeof decoded === 'string') throw new Error(decoded);
      for (let i = 0; i < buf.length; i++) applied[i] = applied[i]! + decoded[i]!;
    }
    // The residual is what the next step adds: applied + residual = steps × gradient (float32 rounding aside).
    buf.fill(0);
    c.begin(buf, buf.length);
    for (let i = 0; i < buf.length; i++) {
      const truth = steps * gradient[i]!;
      expect(Math.abs(applied[i]! + buf[i]! - truth)).toBeLessThanOrEqual(1e-4 * Math.abs(truth) + 1e-12);
      // Bounded by one rounding, not growing with the step count.
      expect(Math.abs(applied[i]! - truth)).toBeLessThanOrEqual(2 * UNIT_ROUNDOFF[format] * Math.abs(gradient[i]!) + (format === 'fp16' ? 2 ** -24 : 0));
    }
    // The tiny value arrives on average (a whole fp16 subnormal now and then) instead of never.
    expect(applied[0]!).toBeGreaterThan(0.8 * steps * Math.fround(1e-9));
  });

  it('reset drops every residual: the next buffer gets nothing added', () => {
    const c = new ChunkCompressor('bf16', 64);
    const buf = new Float32Array(8).fill(1 + 2 ** -10);
    c.begin(buf, 8);
    c.encode(buf, 0);
    expect(c.residualNorm()).toBeGreaterThan(0);
    c.reset();
    const next = new Float32Array(8);
    c.begin(next, 8);
    expect(next.every((v) => v === 0)).toBe(true);
    expect(c.residualNorm()).toBe(0);
  });
});
