import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/shared/core/backend.js';
import { gatherBatch, loadMnist, type MnistSplit } from '../../src/shared/data/mnist.js';
import { buildModel } from '../../src/shared/model/zoo.js';
import { evaluationReport, formatEvaluation } from '../../src/shared/train/evaluation.js';
import { Evaluator } from '../../src/shared/train/evaluator.js';
import { mistakeSchema } from '../../src/shared/train/mistake.js';

/** A 10-class confusion matrix (row = true label, column = predicted) from a few labelled rows; the rest are zero. */
function confusion(rows: Record<number, number[]>): Int32Array {
  const m = new Int32Array(100);
  for (const [label, row] of Object.entries(rows)) row.forEach((v, c) => (m[Number(label) * 10 + c] = v));
  return m;
}

/*
 * Worked by hand. Classes 4..9 are outside the subset (no support, never predicted); class 3 has support 2 but is
 * never predicted.
 *
 *   true\pred   0  1  2  3   support
 *       0       8  1  1  0     10
 *       1       2  6  0  0      8
 *       2       0  1  4  0      5
 *       3       1  0  1  0      2
 *   predicted  11  8  6  0     25     correct = 8 + 6 + 4 = 18 → accuracy 0.72
 *
 *   class 0: P = 8/11, R = 8/10, F1 = 2·TP/(pred + support) = 16/21
 *   class 1: P = 6/8,  R = 6/8,  F1 = 12/16
 *   class 2: P = 4/6,  R = 4/5,  F1 = 8/11
 *   class 3: P = 0,    R = 0,    F1 = 0
 *   macro F1 over the 4 active classes = (16/21 + 3/4 + 8/11 + 0) / 4
 */
const SUBSET = confusion({ 0: [8, 1, 1, 0], 1: [2, 6, 0, 0], 2: [0, 1, 4, 0], 3: [1, 0, 1, 0] });

describe('evaluationReport', () => {
  const r = evaluationReport(SUBSET, 5);

  it('computes accuracy, count and mean loss', () => {
    expect(r.count).toBe(25);
    expect(r.accuracy).toBeCloseTo(18 / 25, 12);
    expect(r.loss).toBeCloseTo(5 / 25, 12);
  });

  it('computes per-class precision, recall, F1 and support', () => {
    const expected = [
      { label: 0, precision: 8 / 11, recall: 8 / 10, f1: 16 / 21, support: 10 },
      { label: 1, precision: 6 / 8, recall: 6 / 8, f1: 12 / 16, support: 8 },
      { label: 2, precision: 4 / 6, recall: 4 / 5, f1: 8 / 11, support: 5 },
      { label: 3, precision: 0, recall: 0, f1: 0, support: 2 },
    ];
    for (const e of expected) {
      const c = r.perClass[e.label]!;
      expect(c.label).toBe(e.label);
      expect(c.support).toBe(e.support);
      expect(c.precision, `precision of ${e.label}`).toBeCloseTo(e.precision, 12);
      expect(c.recall, `recall of ${e.label}`).toBeCloseTo(e.recall, 12);
      expect(c.f1, `f1 of ${e.label}`).toBeCloseTo(e.f1, 12);
    }
    for (let k = 4; k < 10; k++) expect(r.perClass[k]).toEqual({ label: k, precision: 0, recall: 0, f1: 0, support: 0 });
  });

  it('averages F1 over classes with support or predictions only (class 3 counts as 0, classes 4..9 are left out)', () => {
    expect(r.macroF1).toBeCloseTo((16 / 21 + 12 / 16 + 8 / 11 + 0) / 4, 12);
  });

  it('counts a class that is predicted but has no support in the macro average, with precision 0', () => {
    // One 0 predicted correctly, one 0 predicted as 4: class 0 P = 1, R = 1/2, F1 = 2/3; class 4 P = 0, F1 = 0.
    const s = evaluationReport(confusion({ 0: [1, 0, 0, 0, 1] }), 0);
    expect(s.accuracy).toBe(0.5);
    expect(s.perClass[4]).toEqual({ label: 4, precision: 0, recall: 0, f1: 0, support: 0 });
    expect(s.perClass[0]!.f1).toBeCloseTo(2 / 3, 12);
    expect(s.macroF1).toBeCloseTo(1 / 3, 12);
  });

  it('returns the matrix as rows and zeros for an empty evaluation', () => {
    expect(r.confusion[0]).toEqual([8, 1, 1, 0, 0, 0, 0, 0, 0, 0]);
    expect(r.confusion[3]).toEqual([1, 0, 1, 0, 0, 0, 0, 0, 0, 0]);
    const empty = evaluationReport(new Int32Array(100), 0);
    expect(empty).toMatchObject({ accuracy: 0, macroF1: 0, count: 0, loss: 0 });
  });
});

describe('formatEvaluation', () => {
  const big = confusion({ 0: [980, 0, 0, 0, 0, 0, 0, 0, 0, 0], 1: [0, 1130, 5, 0, 0, 0, 0, 0, 0, 0], 2: [3, 0, 1021, 8] });
  const text = formatEvaluation(evaluationReport(big, 100), 'test');
  const lines = text.split('\n');

  it('prints the summary with accuracy as a percentage', () => {
    const total = 980 + 1135 + 1032;
    expect(lines[0]).toBe(`test: accuracy ${(((980 + 1130 + 1021) / total) * 100).toFixed(2)}%  macro F1 ${evaluationReport(big, 100).macroF1.toFixed(4)}  loss ${(100 / total).toFixed(4)}  (${total} samples)`);
  });

  it('lists only active classes in the per-class table', () => {
    const header = lines.indexOf('class  precision  recall     f1  support');
    expect(header).toBeGreaterThan(0);
    const rows = lines.slice(header + 1, lines.indexOf('', header));
    expect(rows.map((l) => Number(l.trim().split(/\s+/)[0]))).toEqual([0, 1, 2, 3]);
    // class 2: P = 1021/1026, R = 1021/1032, support 1032
    expect(rows[2]).toBe(`    2  ${(1021 / 1026).toFixed(4).padStart(9)}  ${(1021 / 1032).toFixed(4)}  ${((2 * 1021) / (1026 + 1032)).toFixed(4)}     1032`);
  });

  it('prints every confusion-matrix row right-aligned in equal-width columns', () => {
    const start = lines.indexOf('confusion matrix (rows: true label, columns: predicted)');
    expect(start).toBeGreaterThan(0);
    const width = 5; // widest count "1130" is 4 characters (the minimum), plus one space
    const header = lines[start + 1]!;
    expect(header).toBe(` true |${Array.from({ length: 10 }, (_, k) => String(k).padStart(width)).join('')}`);
    const matrix = lines.slice(start + 3);
    expect(matrix).toHaveLength(10);
    evaluationReport(big, 100).confusion.forEach((row, k) => {
      expect(matrix[k]).toBe(`${String(k).padStart(5)} |${row.map((v) => String(v).padStart(width)).join('')}`);
    });
    expect(matrix[1]).toContain(' 1130    5');
    expect(new Set([header, ...matrix].map((l) => l.length)).size).toBe(1);
  });

  it('widens the columns for counts longer than four digits', () => {
    const wide = formatEvaluation(evaluationReport(confusion({ 0: [123456, 7] }), 0)).split('\n');
    const row0 = wide.find((l) => l.startsWith('    0 |'))!;
    expect(row0).toBe(`    0 |${[123456, 7, 0, 0, 0, 0, 0, 0, 0, 0].map((v) => String(v).padStart(7)).join('')}`);
  });
});

// Issue #12: one evaluator for training, distributed evaluation, `eval` and `export`.
describe('Evaluator', () => {
  let test: MnistSplit;
  let model: tf.LayersModel;
  /** Every third test image: mistakes must name split indices, not positions in this list. */
  const indices = Int32Array.from({ length: 700 }, (_, i) => 3 * i);
  const gather = (ids: ArrayLike<number>) => gatherBatch(test.images, test.labels, ids);

  /** Predictions and probabilities of the full model (its softmax layer), in one batch. */
  function reference(): { predicted: number[]; probs: Float32Array } {
    const batch = gather(indices);
    const probs = tf.tidy(() => (model.predict(tf.tensor4d(batch.x, [batch.size, 28, 28, 1])) as tf.Tensor2D).dataSync() as Float32Array);
    const predicted = Array.from({ length: batch.size }, (_, i) => {
      let best = 0;
      for (let k = 1; k < 10; k++) if (probs[i * 10 + k]! > probs[i * 10 + best]!) best = k;
      return best;
    });
    return { predicted, probs };
  }

  beforeAll(async () => {
    await initBackend('wasm');
    test = loadMnist().test;
    // Untrained: most samples are mistakes, so the top-K selection has plenty to choose from.
    model = buildModel('mlp', { seed: 3 });
  });

  it('counts the confusion matrix, summed loss and predictions exactly as the model predicts', async () => {
    const { predicted, probs } = reference();
    const predictions = new Int32Array(indices.length);
    const counts = await new Evaluator(model).evaluate(indices, gather, { batchSize: 64, predictions });
    expect(counts.count).toBe(indices.length);
    expect(Array.from(predictions)).toEqual(predicted);
    const confusion = new Int32Array(100);
    let loss = 0;
    indices.forEach((id, i) => {
      const label = test.labels[id]!;
      confusion[label * 10 + predicted[i]!]! += 1;
      loss -= Math.log(probs[i * 10 + label]!);
    });
    expect(Array.from(counts.confusion)).toEqual(Array.from(confusion));
    expect(counts.lossSum / counts.count).toBeCloseTo(loss / indices.length, 4);
  });

  it('keeps the K most confident mistakes, by split index, highest confidence first', async () => {
    const { predicted, probs } = reference();
    const all = Array.from(indices, (id, i) => ({ index: id, label: test.labels[id]!, predicted: predicted[i]!, confidence: probs[i * 10 + predicted[i]!]! }))
      .filter((m) => m.label !== m.predicted)
      .sort((a, b) => b.confidence - a.confidence);
    expect(all.length).toBeGreaterThan(100);
    const { mistakes } = await new Evaluator(model).evaluate(indices, gather, { batchSize: 50, mistakes: 24 });
    expect(mistakes).toHaveLength(24);
    for (const m of mistakes) expect(mistakeSchema.parse(m)).toEqual(m);
    expect(mistakes.map((m) => m.confidence)).toEqual([...mistakes.map((m) => m.confidence)].sort((a, b) => b - a));
    mistakes.forEach((m, k) => {
      expect(m.confidence).toBeCloseTo(all[k]!.confidence, 6);
      expect(test.labels[m.index]).toBe(m.label);
      expect(m.label).not.toBe(m.predicted);
    });
    expect((await new Evaluator(model).evaluate(indices, gather)).mistakes).toEqual([]);
  });

  it('gives the same counts and mistakes whatever the batch size', async () => {
    const evaluator = new Evaluator(model);
    const a = await evaluator.evaluate(indices, gather, { batchSize: 1000, mistakes: 10 });
    const b = await evaluator.evaluate(indices, gather, { batchSize: 7, mistakes: 10 });
    expect(Array.from(b.confusion)).toEqual(Array.from(a.confusion));
    expect(b.mistakes.map((m) => m.index)).toEqual(a.mistakes.map((m) => m.index));
    expect(b.lossSum).toBeCloseTo(a.lossSum, 2);
  });

  it('returns zeros for no samples', async () => {
    const counts = await new Evaluator(model).evaluate([], gather, { mistakes: 5 });
    expect(counts).toEqual({ confusion: new Int32Array(100), lossSum: 0, count: 0, mistakes: [] });
  });

  it('keeps tf.memory().numTensors flat over repeated evaluations', async () => {
    const evaluator = new Evaluator(model);
    const before = tf.memory().numTensors;
    for (let r = 0; r < 5; r++) await evaluator.evaluate(indices, gather, { batchSize: 128, mistakes: 8, predictions: new Int32Array(indices.length) });
    expect(tf.memory().numTensors).toBe(before);
  });
});
