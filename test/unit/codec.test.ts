import { describe, expect, it } from 'vitest';
import { decode, decodeParts, encode, encodeWithPayload } from '../../src/shared/wire/codec.js';
import { isMnistDdpError } from '../../src/shared/core/errors.js';

function bits(a: Float32Array): Uint32Array {
  return new Uint32Array(a.buffer, a.byteOffset, a.length);
}

/** Copies `bytes` to `offset` bytes into a fresh ArrayBuffer, so the frame starts at a chosen alignment. */
function at(bytes: Uint8Array, offset: number): Uint8Array {
  const out = new Uint8Array(bytes.length + offset);
  out.set(bytes, offset);
  return out.subarray(offset);
}

function floatsFromBits(...words: number[]): Float32Array {
  return new Float32Array(new Uint32Array(words).buffer);
}

describe('codec', () => {
  it('round-trips plain values', () => {
    const value = { type: 'x', n: 3, f: -1.5, s: 'héllo', list: [1, 'a', null, true], nested: { a: { b: 2 ** 40 } } };
    expect(decode(encode(value))).toEqual(value);
  });

  it.each([0, 1, 2, 3, 5, 1000, 65_537])('round-trips a Float32Array of %i floats bit for bit at every alignment', (length) => {
    const data = new Float32Array(length).map((_, i) => Math.fround(Math.sin(i) * 1e3));
    const encoded = encode({ data });
    for (const offset of [0, 1, 2, 3, 4, 8]) {
      const decoded = decode(at(encoded, offset));
      expect(decoded).toMatchObject({ data: expect.any(Float32Array) });
      const got = (decoded as { data: Float32Array }).data;
      expect(got.length).toBe(length);
      expect(Buffer.compare(Buffer.from(got.buffer, got.byteOffset, got.byteLength), Buffer.from(data.buffer))).toBe(0);
    }
  });

  it('preserves NaN payloads, signed zeros, infinities and subnormals', () => {
    const special = floatsFromBits(0x7fc00000, 0x7fc00001, 0xffc00000, 0x7f800001, 0x80000000, 0x00000000, 0x7f800000, 0xff800000, 0x00000001, 0x807fffff);
    const got = (decode(encode({ special })) as { special: Float32Array }).special;
    expect(Array.from(bits(got))).toEqual(Array.from(bits(special)));
  });

  it('views the floats in place when the frame is 4-byte aligned and copies when it is not', () => {
    const data = new Float32Array([1, 2, 3, 4]);
    const aligned = at(encode({ data }), 0);
    const view = (decode(aligned) as { data: Float32Array }).data;
    expect(view.buffer).toBe(aligned.buffer);

    const unaligned = at(encode({ data }), 1);
    const copy = (decode(unaligned) as { data: Float32Array }).data;
    expect(copy.buffer).not.toBe(unaligned.buffer);
    expect(copy.byteOffset % 4).toBe(0);
    expect(Array.from(copy)).toEqual([1, 2, 3, 4]);
  });

  it('aligns every tensor of a message with several', () => {
    const value = { a: new Float32Array([1]), s: 'xyz', b: new Float32Array([2, 3]), list: [new Float32Array(7).fill(4)] };
    const encoded = at(encode(value), 0);
    const got = decode(encoded) as typeof value;
    expect(got).toEqual(value);
    for (const f of [got.a, got.b, got.list[0]]) expect(f?.buffer).toBe(encoded.buffer);
  });

  it('keeps earlier encoded frames intact after later encodes (they may still be queued for sending)', () => {
    const first = encode({ data: new Float32Array(100_000).fill(1) });
    const snapshot = Buffer.from(first);
    for (let i = 0; i < 50; i++) encode({ data: new Float32Array(100_000).fill(i) });
    expect(Buffer.compare(first, snapshot)).toBe(0);
  });

  it.each([
    ['garbage', Buffer.from([0xc1, 0xff, 0x00])],
    ['truncated', encode({ data: new Float32Array(10) }).subarray(0, 20)],
    ['bad pad byte', Buffer.from([0xc9, 0, 0, 0, 8, 0x46, 9, 0, 0, 0, 1, 2, 3, 4])],
    ['length not a multiple of 4', Buffer.from([0xc9, 0, 0, 0, 6, 0x46, 0, 0, 0, 0, 1, 2])],
    ['empty', Buffer.alloc(0)],
  ])('rejects %s input with FRAME_MALFORMED', (_name, bytes) => {
    let caught: unknown;
    try {
      decode(bytes);
    } catch (err) {
      caught = err;
    }
    expect(isMnistDdpError(caught, 'FRAME_MALFORMED')).toBe(true);
  });
});

describe('split frames (one MessagePack document in three ZeroMQ parts)', () => {
  it('send the floats as a view, not a copy, and decode to the same message', () => {
    const buf = new Float32Array([0, 1, 2, 3, 4, 5]);
    const data = buf.subarray(2, 5);
    const parts = encodeWithPayload({ type: 'ring-chunk', step: 3, data });
    expect(parts[1].buffer).toBe(buf.buffer);
    expect(parts[1].byteOffset).toBe(8);
    const decoded = decodeParts(parts);
    expect(decoded).toEqual({ type: 'ring-chunk', step: 3, data: new Float32Array([2, 3, 4]) });
  });

  it('concatenate to a MessagePack document that a plain decode (and any reader) reads as the same message', () => {
    const message = { type: 'ring-chunk', generation: 2, step: 9, rank: 1, chunk: 4, data: new Float32Array([1.5, -2, 3e-8]) };
    const whole = Buffer.concat(encodeWithPayload(message));
    expect(decode(whole)).toEqual(message);
    // Plain MessagePack: a map of 6 keys (msgpackr writes map16: 0xde 0x0006), the last key `data` (fixstr a4) with
    // the floats inside an ext32 (0xc9, length, type 0x46, pad 0) that ends the document.
    expect([...whole.subarray(0, 3)]).toEqual([0xde, 0x00, 0x06]);
    const ext = whole.length - 3 - 12 - 7;
    expect([...whole.subarray(ext - 5, ext)]).toEqual([0xa4, 0x64, 0x61, 0x74, 0x61]);
    expect([...whole.subarray(ext, ext + 7)]).toEqual([0xc9, 0, 0, 0, 16, 0x46, 0]);
  });

  it('copy an unaligned payload and view an aligned one', () => {
    const [head, payload, tail] = encodeWithPayload({ data: new Float32Array([7, 8]) });
    const aligned = decodeParts([head, at(payload, 0), tail]) as { data: Float32Array };
    const unaligned = decodeParts([head, at(payload, 3), tail]) as { data: Float32Array };
    expect(Array.from(aligned.data)).toEqual([7, 8]);
    expect(Array.from(unaligned.data)).toEqual([7, 8]);
    expect(unaligned.data.byteOffset % 4).toBe(0);
  });

  const [head, payload, tail] = encodeWithPayload({ step: 1, data: new Float32Array([1, 2]) });
  /** `head` with its extension header announcing a payload of `bytes` bytes. */
  const announcing = (h: Buffer, bytes: number): Buffer => {
    const copy = Buffer.from(h);
    copy.writeUInt32BE(bytes + 4, copy.length - 6);
    return copy;
  };
  it.each([
    ['two parts', [head, payload]],
    ['four parts', [head, payload, tail, tail]],
    ['no parts', []],
    ['a payload longer than announced', [head, Buffer.alloc(12), tail]],
    ['a payload of partial floats', [announcing(head, 5), Buffer.alloc(5), tail]],
    ['a missing closing part', [head, payload, Buffer.alloc(0)]],
    ['a header that is not a split map', [encode({ step: 1 }), payload, tail]],
    ['an extension that is not the value of data', [Buffer.concat([encode({ data: null, step: 1 }).subarray(0, -1), head.subarray(head.length - 7)]), payload, tail]],
    ['a closing part that is not zeros', [head, payload, Buffer.from([0, 1, 0])]],
    ['a non-map header', [Buffer.concat([encode([1, 2]).subarray(0, 2), head.subarray(head.length - 7)]), payload, tail]],
  ])('reject %s with FRAME_MALFORMED', (_name, parts) => {
    expect(() => decodeParts(parts as Uint8Array[])).toThrow(expect.objectContaining({ code: 'FRAME_MALFORMED' }));
  });
});
