import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { gzipSync } from 'node:zlib';
import { IDX_DTYPE_U8 } from '../../src/shared/data/idx.js';

/** Encodes u8 data as an IDX file (dtype 0x08, rank = dims.length). data.length must equal product(dims). */
export function encodeIdx(data: Uint8Array, dims: readonly number[]): Buffer {
  if (dims.length < 1 || dims.length > 255) throw new RangeError(`IDX rank must be 1..255, got ${dims.length}`);
  let size = 1;
  for (const d of dims) {
    if (!Number.isInteger(d) || d < 0 || d > 0xffffffff) throw new RangeError(`IDX dimension must be a u32, got ${d}`);
    size *= d;
  }
  if (size !== data.length) throw new RangeError(`IDX data has ${data.length} bytes but dimensions [${dims.join(', ')}] need ${size}`);
  const headerLength = 4 + 4 * dims.length;
  const out = Buffer.alloc(headerLength + size);
  out[2] = IDX_DTYPE_U8;
  out[3] = dims.length;
  dims.forEach((d, i) => out.writeUInt32BE(d, 4 + 4 * i));
  out.set(data, headerLength);
  return out;
}

/** Writes an IDX file, gzip-compressed when `gzip` is set; creates the parent directory. */
export function writeIdx(file: string, data: Uint8Array, dims: readonly number[], options: { gzip?: boolean } = {}): void {
  const encoded = encodeIdx(data, dims);
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, options.gzip ? gzipSync(encoded) : encoded);
}
