import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isMnistDdpError, type ErrorCode } from '../../src/shared/core/errors.js';
import { readIdx, readIdxImages, readIdxLabels, readIdxPair } from '../../src/shared/data/idx.js';
import { encodeIdx, writeIdx } from '../helpers/idx-writer.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'mnist-ddp-idx-'));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

const COUNT = 3;
const ROWS = 4;
const COLS = 5;
const pixels = Uint8Array.from({ length: COUNT * ROWS * COLS }, (_, i) => (i * 37) % 256);
const labels = Uint8Array.from([7, 0, 9]);

function write(name: string, bytes: Uint8Array): string {
  const file = join(dir, name);
  writeFileSync(file, bytes);
  return file;
}

function expectCode(fn: () => unknown, code: ErrorCode, ...mentions: string[]): void {
  try {
    fn();
  } catch (err) {
    expect(isMnistDdpError(err, code), String(err)).toBe(true);
    for (const m of mentions) expect((err as Error).message).toContain(m);
    return;
  }
  expect.unreachable(`expected ${code}`);
}

describe('IDX round trip', () => {
  it('encodes the header exactly', () => {
    const bytes = encodeIdx(labels, [3]);
    expect(Array.from(bytes)).toEqual([0, 0, 8, 1, 0, 0, 0, 3, 7, 0, 9]);
    expect(() => encodeIdx(labels, [4])).toThrow(RangeError);
  });

  for (const gzip of [false, true]) {
    it(`reads back images and labels (${gzip ? 'gzip' : 'raw'})`, () => {
      const imagesFile = join(dir, gzip ? 'img.gz' : 'img');
      const labelsFile = join(dir, gzip ? 'lbl.gz' : 'lbl');
      writeIdx(imagesFile, pixels, [COUNT, ROWS, COLS], { gzip });
      writeIdx(labelsFile, labels, [COUNT], { gzip });
      const pair = readIdxPair(imagesFile, labelsFile);
      expect(pair.images).toMatchObject({ count: COUNT, rows: ROWS, cols: COLS });
      expect(Array.from(pair.images.data)).toEqual(Array.from(pixels));
      expect(Array.from(pair.labels.data)).toEqual([7, 0, 9]);
      expect(pair.labels.maxLabel).toBe(9);
      expect(readIdx(imagesFile).dims).toEqual([COUNT, ROWS, COLS]);
    });
  }

  it('detects gzip by magic bytes, not by file name', () => {
    const file = write('labels-no-extension', gzipSync(encodeIdx(labels, [3])));
    expect(Array.from(readIdxLabels(file).data)).toEqual([7, 0, 9]);
  });
});

describe('IDX corruption', () => {
  const goodImages = (): Buffer => encodeIdx(pixels, [COUNT, ROWS, COLS]);
  const goodLabels = (): Buffer => encodeIdx(labels, [COUNT]);

  it('bad magic', () => {
    const bytes = goodImages();
    bytes[0] = 0x12;
    const file = write('bad-magic', bytes);
    expectCode(() => readIdxImages(file), 'IDX_CORRUPT', file, 'magic');
  });

  it('wrong dtype byte', () => {
    const bytes = goodImages();
    bytes[2] = 0x0d;
    const file = write('float-dtype', bytes);
    expectCode(() => readIdxImages(file), 'IDX_CORRUPT', file, '0x0d');
  });

  it('wrong rank: a labels file read as images and vice versa', () => {
    const labelsFile = write('labels', goodLabels());
    const imagesFile = write('images', goodImages());
    expectCode(() => readIdxImages(labelsFile), 'IDX_CORRUPT', labelsFile, 'rank is 1, expected 3');
    expectCode(() => readIdxLabels(imagesFile), 'IDX_CORRUPT', imagesFile, 'rank is 3, expected 1');
  });

  it('truncated data, truncated header, and too short for magic', () => {
    const full = goodImages();
    const file = write('truncated', full.subarray(0, full.length - 1));
    expectCode(() => readIdxImages(file), 'IDX_CORRUPT', file, 'truncated');
    const header = write('truncated-header', full.subarray(0, 10));
    expectCode(() => readIdxImages(header), 'IDX_CORRUPT', header, 'truncated header');
    const tiny = write('tiny', full.subarray(0, 2));
    expectCode(() => readIdxImages(tiny), 'IDX_CORRUPT', tiny);
  });

  it('truncated gzip file', () => {
    const gz = gzipSync(goodImages());
    const file = write('truncated.gz', gz.subarray(0, gz.length - 8));
    expectCode(() => readIdxImages(file), 'IDX_CORRUPT', file);
  });

  it('trailing bytes', () => {
    const file = write('trailing', Buffer.concat([goodLabels(), Buffer.from([1, 2])]));
    expectCode(() => readIdxLabels(file), 'IDX_CORRUPT', file, '2 trailing bytes');
  });

  it('label out of range reports the offender and the maximum', () => {
    const file = write('bad-labels', encodeIdx(Uint8Array.from([1, 10, 200]), [3]));
    expectCode(() => readIdxLabels(file), 'IDX_CORRUPT', file, 'label 10 at index 1', 'largest label in file: 200');
  });

  it('count mismatch between images and labels names both files and both counts', () => {
    const imagesFile = write('images', goodImages());
    const labelsFile = write('labels', encodeIdx(Uint8Array.from([1, 2]), [2]));
    expectCode(() => readIdxPair(imagesFile, labelsFile), 'IDX_MISMATCH', imagesFile, labelsFile, '3 images', '2 labels');
  });

  it('missing file', () => {
    const file = join(dir, 'nope', 'train-images-idx3-ubyte');
    expectCode(() => readIdxImages(file), 'DATA_NOT_FOUND', file, '--data-dir');
  });
});
