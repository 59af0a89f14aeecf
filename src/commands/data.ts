import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { PNG } from 'pngjs';
import type { DataConfig } from '../shared/core/config.js';
import { componentLogger } from '../shared/core/log.js';
import { NUM_CLASSES, loadMnist, type MnistSplit } from '../shared/data/mnist.js';

export interface SplitStats {
  count: number;
  /** Examples per class 0..NUM_CLASSES-1. */
  classCounts: number[];
  /** Mean and standard deviation of all pixels on the [0, 1] scale. */
  pixelMean: number;
  pixelStd: number;
}

export interface DataReport {
  dataDir: string;
  rows: number;
  cols: number;
  train: SplitStats;
  test: SplitStats;
  samples: { file: string; width: number; height: number };
}

const SAMPLE_GRID_COLUMNS = 10;

/** Exact stats from a 256-bin histogram: one pass over the bytes, no floating-point accumulation per pixel. */
export function splitStats(split: MnistSplit): SplitStats {
  const classCounts = new Array<number>(NUM_CLASSES).fill(0);
  for (let i = 0; i < split.labels.length; i++) classCounts[split.labels[i]!]!++;
  const histogram = new Float64Array(256);
  const images = split.images;
  for (let i = 0; i < images.length; i++) histogram[images[i]!]!++;
  let sum = 0;
  let sumSq = 0;
  for (let v = 0; v < 256; v++) {
    const h = histogram[v]!;
    sum += h * v;
    sumSq += h * v * v;
  }
  const n = images.length;
  const mean = n > 0 ? sum / n : 0;
  const variance = n > 0 ? Math.max(0, sumSq / n - mean * mean) : 0;
  return { count: split.count, classCounts, pixelMean: mean / 255, pixelStd: Math.sqrt(variance) / 255 };
}

/**
 * PNG grid of digits: one row per class (0 at the top), the first `columns` examples of that class in split order.
 * Grey-scale ink on black as stored; cells of classes with fewer examples stay black.
 */
export function sampleGridPng(split: MnistSplit, columns: number = SAMPLE_GRID_COLUMNS): PNG {
  const { rows, cols } = split;
  const png = new PNG({ width: columns * cols, height: NUM_CLASSES * rows, colorType: 0, inputColorType: 6 });
  png.data.fill(0);
  for (let i = 3; i < png.data.length; i += 4) png.data[i] = 255;
  const filled = new Array<number>(NUM_CLASSES).fill(0);
  const pixels = rows * cols;
  for (let idx = 0; idx < split.count; idx++) {
    const label = split.labels[idx]!;
    const column = filled[label]!;
    if (column >= columns) continue;
    filled[label] = column + 1;
    for (let r = 0; r < rows; r++) {
      const outRow = (label * rows + r) * png.width + column * cols;
      for (let c = 0; c < cols; c++) {
        const v = split.images[idx * pixels + r * cols + c]!;
        const o = (outRow + c) * 4;
        png.data[o] = v;
        png.data[o + 1] = v;
        png.data[o + 2] = v;
      }
    }
    if (filled.every((f) => f >= columns)) break;
  }
  return png;
}

function formatTable(report: DataReport): string {
  const header = ['split', 'count', ...Array.from({ length: NUM_CLASSES }, (_, c) => String(c)), 'mean', 'std'];
  const row = (name: string, s: SplitStats): string[] => [
    name,
    String(s.count),
    ...s.classCounts.map(String),
    s.pixelMean.toFixed(4),
    s.pixelStd.toFixed(4),
  ];
  const table = [header, row('train', report.train), row('test', report.test)];
  const widths = header.map((_, i) => Math.max(...table.map((r) => r[i]!.length)));
  const lines = table.map((r) => r.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join('  '));
  return [
    `data: ${report.dataDir} (${report.rows}×${report.cols} images; per-class counts; pixel mean/std on [0,1])`,
    ...lines,
    `samples: ${report.samples.file} (${report.samples.width}×${report.samples.height}, test split, first ${SAMPLE_GRID_COLUMNS} of each class)`,
  ].join('\n');
}

/** `mnist-ddp data`: dataset statistics (aligned table, or one JSON line with `json`) and a PNG grid of test digits. */
export async function runDataCommand(opts: DataConfig, io: { stdout: (s: string) => void }): Promise<DataReport> {
  const dataset = loadMnist({ dataDir: opts.dataDir });
  const file = resolve(opts.out);
  const png = sampleGridPng(dataset.test);
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, PNG.sync.write(png, { colorType: 0, inputColorType: 6 }));
  componentLogger('data').debug({ file }, 'wrote sample grid');
  const report: DataReport = {
    dataDir: dataset.dataDir,
    rows: dataset.train.rows,
    cols: dataset.train.cols,
    train: splitStats(dataset.train),
    test: splitStats(dataset.test),
    samples: { file, width: png.width, height: png.height },
  };
  io.stdout(opts.json ? `${JSON.stringify(report)}\n` : `${formatTable(report)}\n`);
  return report;
}
