import { Packr, Unpackr, addExtension } from 'msgpackr';
import { endianness } from 'node:os';
import { MnistDdpError } from '../core/errors.js';

/**
 * Wire codec: MessagePack (msgpackr, no records, so any MessagePack reader can decode it) with one extension that
 * carries a Float32Array as raw little-endian bytes.
 *
 * Extension layout (payload after the ext32 header `c9 <u32 length> <type>`):
 *   [pad: u8 in 0..3] [pad bytes] [float bytes] [3 - pad bytes]
 * The encoder chooses `pad` so the float bytes start 4-byte aligned relative to the start of the encoded buffer,
 * which lets the decoder view them in place whenever the received buffer itself starts aligned.
 */
const FLOAT32_EXT_TYPE = 0x46;

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

/** The ext32 header of a Float32Array extension: 0xc9, the payload length (u32, big-endian), our extension type. */
function writeExtHeader(target: Uint8Array, at: number, payloadLength: number): void {
  target[at] = 0xc9;
  new DataView(target.buffer, target.byteOffset).setUint32(at + 1, payloadLength);
  target[at + 5] = FLOAT32_EXT_TYPE;
}

const float32Extension: InPlaceExtension = {
  Class: Float32Array,
  type: FLOAT32_EXT_TYPE,
  pack(value, allocateForWrite) {
    const byteLength = value.byteLength;
    const payloadLength = PAD_SLOT_BYTES + byteLength;
    const { target, position } = allocateForWrite(EXT_HEADER_BYTES + payloadLength);
    writeExtHeader(target, position, payloadLength);
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
function float32View(bytes: Uint8Array): Float32Array {
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
 * Decodes one frame. Returns `unknown`: callers must pass the result through a type guard (ring-messages.ts, control-messages.ts).
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

const NIL = 0xc0;
/** The ext32 header of a split frame's floats: 0xc9, u32 payload length, type, pad count 0. */
const SPLIT_EXT_BYTES = EXT_HEADER_BYTES + 1;
/** Closes the extension payload of a split frame (pad count 0 leaves 3 trailing bytes, see the layout above). */
const SPLIT_TAIL = Buffer.alloc(PAD_SLOT_BYTES - 1);
/** The key `data` as MessagePack writes it (fixstr of 4 bytes): a split frame's extension must be its value. */
const DATA_KEY = Buffer.from([0xa4, 0x64, 0x61, 0x74, 0x61]);

/**
 * A frame for bulk tensors, split so that ZeroMQ sends and receives the floats without a copy. The three parts,
 * concatenated, are one MessagePack document that decodes to the message (like `encode`'s, but with pad 0 in the
 * Float32Array extension: alignment comes from part 1 being its own ZeroMQ message):
 *   part 0: the map with every field, `data` last, up to and including the extension header and pad count;
 *   part 1: `data`'s bytes, as a view of the caller's memory (not a copy);
 *   part 2: the extension's 3 closing bytes.
 * So any MessagePack reader decodes the concatenation. The sender must leave `data` unchanged until ZeroMQ is done
 * with it (see ring-allreduce.ts for how the ring guarantees that).
 */
export function encodeWithPayload<M extends { data: Float32Array }>(message: M): [Buffer, Buffer, Buffer] {
  const { data, ...header } = message;
  const packed = packr.pack({ ...header, data: null });
  if (packed[packed.length - 1] !== NIL) throw new MnistDdpError('INVARIANT_VIOLATED', 'codec: expected the packed map to end with data: nil');
  const head = Buffer.allocUnsafe(packed.length - 1 + SPLIT_EXT_BYTES);
  packed.copy(head, 0, 0, packed.length - 1);
  const at = packed.length - 1;
  writeExtHeader(head, at, PAD_SLOT_BYTES + data.byteLength);
  head[at + 6] = 0; // pad count: part 1 is its own ZeroMQ message, already aligned
  return [head, Buffer.from(data.buffer, data.byteOffset, data.byteLength), SPLIT_TAIL];
}

/**
 * Decodes a one-part frame (`encode`) or a split frame (`encodeWithPayload`) to `unknown`, for a type guard. A split
 * frame's map is decoded with nil in place of its extension (a copy of a few dozen header bytes), and `data` views
 * part 1 in place when aligned. Throws FRAME_MALFORMED.
 */
export function decodeParts(parts: readonly Uint8Array[]): unknown {
  if (parts.length === 1) return decode(parts[0]!);
  const [head, payload, tail] = parts;
  if (parts.length !== 3 || !head || !payload || !tail) {
    throw new MnistDdpError('FRAME_MALFORMED', `frame has ${parts.length} parts, expected 1 or 3`, { parts: parts.length });
  }
  const at = head.length - SPLIT_EXT_BYTES;
  const announced = at >= 0 && head[at] === 0xc9 ? new DataView(head.buffer, head.byteOffset + at + 1, 4).getUint32(0) : -1;
  const keyed = at >= DATA_KEY.length && DATA_KEY.equals(head.subarray(at - DATA_KEY.length, at));
  if (!keyed || announced !== PAD_SLOT_BYTES + payload.length || head[at + 5] !== FLOAT32_EXT_TYPE || head[at + 6] !== 0 || payload.length % 4 !== 0 ||
    tail.length !== SPLIT_TAIL.length || tail.some((b) => b !== 0)) {
    throw new MnistDdpError('FRAME_MALFORMED', `split frame: part 0 must end with the key data and a Float32Array extension header announcing part 1 (${payload.length} bytes, whole floats), and part 2 must close it (${tail.length} zero bytes expected 3)`, {});
  }
  const headerBytes = Buffer.allocUnsafe(at + 1);
  headerBytes.set(head.subarray(0, at));
  headerBytes[at] = NIL;
  const header = decode(headerBytes);
  if (typeof header !== 'object' || header === null || Array.isArray(header) || (header as { data?: unknown }).data !== null) {
    throw new MnistDdpError('FRAME_MALFORMED', 'split frame: part 0 must be a map whose last field is data', {});
  }
  return { ...header, data: float32View(payload) };
}
