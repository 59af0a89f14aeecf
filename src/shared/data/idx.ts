import { readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { MnistDdpError } from '../core/errors.js';

/**
 * IDX format (http://yann.lecun.com/exdb/mnist/): magic = 0x00 0x00 <dtype> <rank>, then `rank` big-endian u32
 * dimensions, then the data in C order. Only dtype 0x08 (unsigned byte) is supported: it is what MNIST and
 * Fashion-MNIST use. Files may be gzip-compressed (detected by the 1f 8b magic, not by the file name).
 */
export const IDX_DTYPE_U8 = 0x08;
export const IMAGES_MAGIC = 0x00000803;
export const LABELS_MAGIC = 0x00000801;

export interface IdxArray {
  dims: number[];
  /** A view into the file's bytes; length is exactly product(dims). */
  data: Uint8Array;
}

export interface IdxImages {
  count: number;
  rows: number;
  cols: number;
  /** count × rows × cols pixels, row-major, 0..255. */
  data: Uint8Array;
}

export interface IdxLabels {
  count: number;
  data: Uint8Array;
  /** Largest label present (−1 for an empty file). */
  maxLabel: number;
}

function corrupt(file: string, problem: string, details: Record<string, unknown> = {}): MnistDdpError {
  return new MnistDdpError('IDX_CORRUPT', `IDX file ${file}: ${problem}`, { file, ...details });
}

function isGzip(bytes: Uint8Array): boolean {
  return bytes.length >= 2 && bytes[0] === 0x1f && bytes[1] === 0x8b;
}

/** Reads a file's bytes, gunzipping if needed. A missing file is DATA_NOT_FOUND. */
export function readIdxBytes(file: string): Uint8Array {
  let raw: Buffer;
  try {
    raw = readFileSync(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') {
      throw new MnistDdpError(
        'DATA_NOT_FOUND',
        `data file not found: ${file}; point --data-dir at a directory holding the four MNIST IDX files (raw or .gz)`,
        { file },
        { cause: err },
      );
    }
    throw err;
  }
  if (!isGzip(raw)) return raw;
  try {
    return gunzipSync(raw);
  } catch (err) {
    throw new MnistDdpError('IDX_CORRUPT', `IDX file ${file}: gzip stream is corrupt (${(err as Error).message})`, { file }, { cause: err });
  }
}

/**
 * Decodes an in-memory IDX file. `expectedRank` (if given) must match the header. The byte length must be exactly
 * header + product(dims): a truncated download and trailing garbage are both errors, never silently tolerated.
 */
export function decodeIdx(bytes: Uint8Array, file: string, expectedRank?: number): IdxArray {
  if (bytes.length < 4) throw corrupt(file, `file is ${bytes.length} bytes, too short for the 4-byte magic number`, { length: bytes.length });
  const hex = Array.from(bytes.subarray(0, 4), (b) => b.toString(16).padStart(2, '0')).join(' ');
  if (bytes[0] !== 0 || bytes[1] !== 0) {
    throw corrupt(file, `bad magic number ${hex}; an IDX file starts with 00 00 <dtype> <rank> (is this an IDX file?)`, { magic: hex });
  }
  const dtype = bytes[2]!;
  const rank = bytes[3]!;
  if (dtype !== IDX_DTYPE_U8) {
    throw corrupt(file, `unsupported dtype byte 0x${dtype.toString(16).padStart(2, '0')}; only 0x08 (unsigned byte) is supported`, { dtype });
  }
  if (expectedRank !== undefined && rank !== expectedRank) {
    throw corrupt(file, `rank is ${rank}, expected ${expectedRank} (magic ${hex})`, { rank, expectedRank });
  }
  if (rank === 0) throw corrupt(file, 'rank is 0', { rank });
  const headerLength = 4 + 4 * rank;
  if (bytes.length < headerLength) {
    throw corrupt(file, `truncated header: ${bytes.length} bytes, the rank-${rank} header needs ${headerLength}`, { length: bytes.length, headerLength });
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const dims: number[] = [];
  let size = 1;
  for (let i = 0; i < rank; i++) {
    const d = view.getUint32(4 + 4 * i, false);
    dims.push(d);
    size *= d;
  }
  const expectedLength = headerLength + size;
  if (bytes.length !== expectedLength) {
    const problem =
      bytes.length < expectedLength
        ? `truncated: ${bytes.length} bytes, dimensions [${dims.join(', ')}] need ${expectedLength} (re-download the file)`
        : `${bytes.length - expectedLength} trailing bytes after the data: ${bytes.length} bytes, dimensions [${dims.join(', ')}] need exactly ${expectedLength}`;
    throw corrupt(file, problem, { dims, length: bytes.length, expectedLength });
  }
  return { dims, data: new Uint8Array(bytes.buffer, bytes.byteOffset + headerLength, size) };
}

export function readIdx(file: string, expectedRank?: number): IdxArray {
  return decodeIdx(readIdxBytes(file), file, expectedRank);
}

export function decodeIdxImages(bytes: Uint8Array, file: string): IdxImages {
  const { dims, data } = decodeIdx(bytes, file, 3);
  const [count, rows, cols] = dims as [number, number, number];
  if (rows === 0 || cols === 0) throw corrupt(file, `image size is ${rows}×${cols}; both must be positive`, { rows, cols });
  return { count, rows, cols, data };
}

/** Labels must lie in 0..numClasses-1; the error reports the first offender and the largest label in the file. */
export function decodeIdxLabels(bytes: Uint8Array, file: string, numClasses = 10): IdxLabels {
  const { dims, data } = decodeIdx(bytes, file, 1);
  let maxLabel = -1;
  let firstBad = -1;
  for (let i = 0; i < data.length; i++) {
    const v = data[i]!;
    if (v > maxLabel) maxLabel = v;
    if (v >= numClasses && firstBad < 0) firstBad = i;
  }
  if (firstBad >= 0) {
    throw corrupt(
      file,
      `label ${data[firstBad]} at index ${firstBad} is outside 0..${numClasses - 1} (largest label in file: ${maxLabel})`,
      { index: firstBad, label: data[firstBad], maxLabel, numClasses },
    );
  }
  return { count: dims[0]!, data, maxLabel };
}

export function readIdxImages(file: string): IdxImages {
  return decodeIdxImages(readIdxBytes(file), file);
}

export function readIdxLabels(file: string, numClasses = 10): IdxLabels {
  return decodeIdxLabels(readIdxBytes(file), file, numClasses);
}

/** Reads an images file and its labels file and checks that they describe the same number of examples. */
export function readIdxPair(imagesFile: string, labelsFile: string, numClasses = 10): { images: IdxImages; labels: IdxLabels } {
  const images = readIdxImages(imagesFile);
  const labels = readIdxLabels(labelsFile, numClasses);
  if (images.count !== labels.count) {
    throw new MnistDdpError(
      'IDX_MISMATCH',
      `${imagesFile} holds ${images.count} images but ${labelsFile} holds ${labels.count} labels; the files must come from the same split`,
      { imagesFile, labelsFile, imageCount: images.count, labelCount: labels.count },
    );
  }
  return { images, labels };
}
