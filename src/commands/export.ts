import { statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../shared/core/backend.js';
import type { ExportConfig } from '../shared/core/config.js';
import { MnistDdpError } from '../shared/core/errors.js';
import { componentLogger } from '../shared/core/log.js';
import { IMAGE_PIXELS, gatherBatch, loadMnist, type MnistSplit } from '../shared/data/mnist.js';
import { MODEL_JSON, WEIGHTS_BIN, loadModelDir, modelArtifacts, writeModelFiles } from '../shared/model/io.js';
import { quantizeWeights, type QuantizeDtype } from '../shared/model/quantize.js';
import { evaluationReport } from '../shared/train/evaluation.js';
import { Evaluator } from '../shared/train/evaluator.js';
import type { Io } from '../shared/core/io.js';

export interface ExportVariant {
  dtype: 'float32' | QuantizeDtype;
  /** weights.bin size in bytes. */
  weightsBytes: number;
  /** model.json + weights.bin, what a browser downloads. */
  totalBytes: number;
  /** Top-1 accuracy on the MNIST test split. */
  accuracy: number;
}

export interface ExportResult {
  out: string;
  testExamples: number;
  float32: ExportVariant;
  exported: ExportVariant;
  /** Test images whose predicted class differs between float32 and the export. */
  changedPredictions: number;
}

const log = componentLogger('export');
const EVAL_BATCH = 500;

/** Top-1 accuracy on every image of `split`, and each image's predicted class in `predictions`. */
async function evaluateSplit(model: tf.LayersModel, split: MnistSplit, predictions: Int32Array): Promise<number> {
  const scratch = { x: new Float32Array(EVAL_BATCH * IMAGE_PIXELS), y: new Int32Array(EVAL_BATCH) };
  const all = Int32Array.from({ length: split.count }, (_, i) => i);
  const counts = await new Evaluator(model).evaluate(all, (ids) => gatherBatch(split.images, split.labels, ids, scratch), { batchSize: EVAL_BATCH, predictions });
  return evaluationReport(counts.confusion, counts.lossSum).accuracy;
}

function fileSize(path: string): number {
  return statSync(path).size;
}

/**
 * Writes the TF.js web format (model.json + weights.bin, loadable by stock `tf.loadLayersModel` over HTTP) from a
 * checkpoint, optionally with quantised weights, then evaluates the float32 checkpoint and the export as written
 * (re-read from disk through tfjs's own weight decoding) on the test split.
 */
export async function runExport(opts: ExportConfig, io: Io): Promise<ExportResult> {
  const checkpoint = resolve(opts.checkpoint);
  const out = resolve(opts.out);
  if (checkpoint === out) {
    throw new MnistDdpError('CONFIG_INVALID', `--out ${out} is the checkpoint directory itself; choose another directory`, { key: 'out', value: out });
  }
  await initBackend(opts.backend, log);
  const model = await loadModelDir(checkpoint);
  const exportedModel = await (async () => {
    try {
      const artifacts = await modelArtifacts(model);
      if (opts.quantize) {
        const q = quantizeWeights(artifacts.weightSpecs, artifacts.weightData, opts.quantize);
        writeModelFiles(out, { ...artifacts, weightData: q.weightData }, { weightSpecs: q.weightSpecs });
      } else {
        writeModelFiles(out, artifacts);
      }
      return await loadModelDir(out);
    } catch (err) {
      model.dispose();
      throw err;
    }
  })();

  const { test } = loadMnist(opts.dataDir === undefined ? {} : { dataDir: opts.dataDir });
  const before = new Int32Array(test.count);
  const after = new Int32Array(test.count);
  let float32Accuracy: number;
  let exportedAccuracy: number;
  try {
    float32Accuracy = await evaluateSplit(model, test, before);
    exportedAccuracy = await evaluateSplit(exportedModel, test, after);
  } finally {
    model.dispose();
    exportedModel.dispose();
  }
  let changed = 0;
  for (let i = 0; i < before.length; i++) if (before[i] !== after[i]) changed++;

  const checkpointWeights = fileSize(join(checkpoint, WEIGHTS_BIN));
  const exportedWeights = fileSize(join(out, WEIGHTS_BIN));
  const result: ExportResult = {
    out,
    testExamples: test.count,
    float32: {
      dtype: 'float32',
      weightsBytes: checkpointWeights,
      totalBytes: checkpointWeights + fileSize(join(checkpoint, MODEL_JSON)),
      accuracy: float32Accuracy,
    },
    exported: {
      dtype: opts.quantize ?? 'float32',
      weightsBytes: exportedWeights,
      totalBytes: exportedWeights + fileSize(join(out, MODEL_JSON)),
      accuracy: exportedAccuracy,
    },
    changedPredictions: changed,
  };
  io.stdout(opts.json ? `${JSON.stringify(result)}\n` : formatExportTable(result));
  log.info({ out, dtype: result.exported.dtype, bytes: result.exported.totalBytes }, 'exported web model');
  return result;
}

function pct(x: number): string {
  return `${(x * 100).toFixed(2)} %`;
}

export function formatExportTable(r: ExportResult): string {
  const rows = [['weights', 'weights.bin', 'with model.json', `test accuracy (${r.testExamples})`]];
  const add = (v: ExportVariant, note: string): void => {
    rows.push([`${v.dtype}${note}`, `${v.weightsBytes} B`, `${v.totalBytes} B`, pct(v.accuracy)]);
  };
  add(r.float32, ' (checkpoint)');
  if (r.exported.dtype !== 'float32') add(r.exported, ' (exported)');
  else rows[1]![0] = 'float32 (exported as is)';
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((row) => row[c]!.length)));
  const lines = rows.map((row) => row.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join('  '));
  const delta = (r.exported.accuracy - r.float32.accuracy) * 100;
  const ratio = r.exported.weightsBytes / Math.max(1, r.float32.weightsBytes);
  lines.push('');
  lines.push(`${r.out}: ${(ratio * 100).toFixed(1)} % of the float32 weights, accuracy ${delta >= 0 ? '+' : ''}${delta.toFixed(2)} pp, ` +
    `${r.changedPredictions} of ${r.testExamples} predictions changed`);
  return `${lines.join('\n')}\n`;
}
