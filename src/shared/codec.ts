import { Packr, Unpackr, addExtension } from 'msgpackr';
import { endianness } from 'node:os';
import { MnistDdpError } from './errors.js';

/**
 * Wire codec: MessagePack (msgpackr, no records, so any MessagePack reader can decode it) with one extension that
 * carries a Float32Array as raw little-endian bytes.
 *
 * Extension layout (payload after the ext32 header `c9 <u32 length> <type>`):
 *   [pad: u8 in 0..3] [pad bytes] [float bytes] [3 - pad bytes]
 * The encoder chooses `pad` so the float bytes start 4-byte aligned relative to the start of the encoded buffer,
 * which lets the decoder view them in place whenever the received buffer itself starts aligned.
 */
export const FLOAT32_EXT_TYPE = 0x46;

const EXT_HEADER_BYTES = 6; // 0xc9, u32 length, type
const PAD_SLOT_BYTES = 4; // pad-count byte + up to 3 pad bytes, always reserved so the frame size does not depend on alignment

if (endianness() !== 'LE') {
  // Float32 payloads are the host's bytes; every supported platform (x64, arm64) is little-endian.
  throw new Error('mnist-ddp codec requires a little-endian host');
}

/** msgpackr's typings omit the second `pack` argument (in-place writes into its output buffer) that this uses. */
type InPlaceExtension = {
  Class: typeof Float32Array;
  type: number;
  pack(value: Float32Array, allocateForWrite: (size: number) => { target: Uint8Array; position: number }): void;
  unpack(payload: Uint8Array): Float32Array;
};

const float32Extension: InPlaceExtension = {
  Class: Float32Array,
  type: FLOAT32_EXT_TYPE,
  pack(value, allocateForWrite) {
    const byteLength = value.byteLength;
    const payloadLength = PAD_SLOT_BYTES + byteLength;
    const { target, position } = allocateForWrite(EXT_HEADER_BYTES + payloadLength);
    target[position] = 0xc9;
    new DataView(target.buffer, target.byteOffset).setUint32(position + 1, payloadLength);
    target[position + 5] = FLOAT32_EXT_TYPE;
    const padAt = position + EXT_HEADER_BYTES;
    // msgpackr starts every message at an 8-aligned offset of its target buffer, so absolute alignment here equals
    // alignment relative to the returned message.
    const pad = (4 - ((target.byteOffset + padAt + 1) % 4)) % 4;
    target[padAt] = pad;
    const dataAt = padAt + 1 + pad;
    target.fill(0, padAt + 1, dataAt);
    target.set(new Uint8Array(value.buffer, value.byteOffset, byteLength), dataAt);
    target.fill(0, dataAt + byteLength, padAt + payloadLength);
  },
  unpack(payload) {
    const pad = payload[0];
    if (pad === undefined || pad > 3 || payload.length < PAD_SLOT_BYTES || (payload.length - PAD_SLOT_BYTES) % 4 !== 0) {
      throw new Error(`malformed Float32Array extension (pad ${String(pad)}, ${payload.length} bytes)`);
    }
    return float32View(payload.subarray(1 + pad, payload.length - (3 - pad)));
  },
};
addExtension(float32Extension as unknown as Parameters<typeof addExtension>[0]);

/**
 * The floats in `bytes` (length a multiple of 4, little-endian). A Float32Array view must start at a multiple of 4
 * bytes in its ArrayBuffer (the constructor throws otherwise), so when the bytes sit at an unaligned address
 * (ZeroMQ hands out message memory at any offset) they have to be copied into fresh, aligned memory. Aligned: a
 * view in place, zero copy — it aliases `bytes`, which must stay unchanged while the floats are in use.
 */
export function float32View(bytes: Uint8Array): Float32Array {
  const length = bytes.length >> 2;
  if (bytes.byteOffset % 4 === 0) return new Float32Array(bytes.buffer, bytes.byteOffset, length);
  const copy = new Float32Array(length);
  new Uint8Array(copy.buffer).set(bytes.subarray(0, length * 4));
  return copy;
}

const packr = new Packr({ useRecords: false });
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true });

/**
 * Encodes a value (objects, arrays, numbers, strings, Float32Array) into a fresh buffer that no later `encode`
 * call overwrites, so it may be handed to ZeroMQ's zero-copy send.
 */
export function encode(value: unknown): Buffer {
  return packr.pack(value);
}

/**
 * Decodes one frame. Returns `unknown`: callers must pass the result through a type guard from protocol.ts.
 * Float32Arrays in the result may alias `bytes` (see the extension's unpack). Throws FRAME_MALFORMED.
 */
export function decode(bytes: Uint8Array): unknown {
  try {
    return unpackr.unpack(bytes);
  } catch (err) {
    throw new MnistDdpError('FRAME_MALFORMED', `could not decode a ${bytes.length}-byte frame: ${(err as Error).message}`, {
      byteLength: bytes.length,
    }, { cause: err });
  }
}

/**
 * Two-part frame for bulk tensors: part 0 is the message without `data` (MessagePack), part 1 is `data`'s raw bytes
 * as a view, not a copy — ZeroMQ then sends them without any copy, so the sender must leave that memory unchanged
 * until ZeroMQ is done with it (see ring-allreduce.ts for how the ring guarantees that).
 */
export function encodeWithPayload<M extends { data: Float32Array }>(message: M): [Buffer, Buffer] {
  const { data, ...header } = message;
  return [packr.pack(header), Buffer.from(data.buffer, data.byteOffset, data.byteLength)];
}

/**
 * Decodes a one-part frame (`encode`) or a two-part frame (`encodeWithPayload`) to `unknown`, for a type guard.
 * Throws FRAME_MALFORMED.
 */
export function decodeParts(parts: readonly Uint8Array[]): unknown {
  const [first, second] = parts;
  if (first === undefined || parts.length > 2) throw new MnistDdpError('FRAME_MALFORMED', `frame has ${parts.length} parts, expected 1 or 2`, { parts: parts.length });
  const header = decode(first);
  if (second === undefined) return header;
  if (typeof header !== 'object' || header === null || Array.isArray(header) || second.length % 4 !== 0) {
    throw new MnistDdpError('FRAME_MALFORMED', `two-part frame needs a map header and a payload of whole floats (got ${second.length} bytes)`, {});
  }
  return { ...header, data: float32View(second) };
}
