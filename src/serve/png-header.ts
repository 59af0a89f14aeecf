import { inflateSync } from 'node:zlib';
import { MnistDdpError } from '../shared/core/errors.js';

/**
 * The largest PNG side POST /predict decodes. The drawing page sends 280×280; 1024×1024 RGBA is 4 MiB decoded and
 * decodes in tens of milliseconds, so one request cannot hold the event loop (or the heap) for long. A small
 * compressed body can claim far more (issue #15: a 137 KB PNG of 12000×12000 took 5.6 s and 1.1 GB to decode), so
 * the size is read from the IHDR chunk and refused before anything is inflated.
 */
export const MAX_PNG_SIDE = 1024;

const SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
/** Bits per pixel for each PNG colour type (per sample × samples). */
const SAMPLES: Readonly<Record<number, number>> = { 0: 1, 2: 3, 3: 1, 4: 2, 6: 4 };

export interface PngHeader {
  width: number;
  height: number;
  bitDepth: number;
  colorType: number;
  interlaced: boolean;
}

const badPng = (message: string): MnistDdpError => new MnistDdpError('BAD_REQUEST', `body is not a valid PNG image: ${message}`, { status: 400 });

/**
 * Reads the IHDR chunk (always the first, PNG spec 11.2.2) and refuses an image over MAX_PNG_SIDE on either side
 * with 413, before any decoding. Throws BAD_REQUEST (400) for a body that is not a PNG.
 */
export function checkPngHeader(body: Buffer): PngHeader {
  if (body.length < 33 || !body.subarray(0, 8).equals(SIGNATURE)) throw badPng('no PNG signature and IHDR chunk');
  if (body.readUInt32BE(8) !== 13 || body.toString('latin1', 12, 16) !== 'IHDR') throw badPng('the first chunk is not IHDR');
  const header: PngHeader = {
    width: body.readUInt32BE(16), height: body.readUInt32BE(20), bitDepth: body[24]!, colorType: body[25]!, interlaced: body[28] === 1,
  };
  const { width, height } = header;
  if (width === 0 || height === 0) throw badPng(`IHDR says ${width}×${height} pixels`);
  if (width > MAX_PNG_SIDE || height > MAX_PNG_SIDE) {
    throw new MnistDdpError('PAYLOAD_TOO_LARGE', `PNG is ${width}×${height} pixels; at most ${MAX_PNG_SIDE}×${MAX_PNG_SIDE} are accepted (28×28 is enough)`, {
      status: 413, width, height, max: MAX_PNG_SIDE,
    });
  }
  return header;
}

/**
 * pngjs bounds the inflated size of a non-interlaced image by its dimensions, but inflates an interlaced one with no
 * limit: a 1 MiB body of zeros inflates to about 1 GB. For those, inflate the IDAT stream here first with a cap of
 * the largest size the header allows (every pass's rows, one filter byte and at most one partial byte each).
 */
export function checkInterlacedSize(body: Buffer, header: PngHeader): void {
  if (!header.interlaced) return;
  const samples = SAMPLES[header.colorType];
  if (samples === undefined) throw badPng(`colour type ${header.colorType}`);
  const idat: Buffer[] = [];
  for (let at = 8; at + 12 <= body.length;) {
    const length = body.readUInt32BE(at);
    const type = body.toString('latin1', at + 4, at + 8);
    if (type === 'IDAT') idat.push(body.subarray(at + 8, Math.min(body.length, at + 8 + length)));
    if (type === 'IEND') break;
    at += 12 + length;
  }
  const bits = header.width * header.height * samples * header.bitDepth;
  const cap = Math.ceil(bits / 8) + 14 * header.height + 64;
  try {
    inflateSync(Buffer.concat(idat), { maxOutputLength: cap });
  } catch (err) {
    throw badPng(`its image data does not inflate to at most ${cap} bytes (${(err as Error).message})`);
  }
}
