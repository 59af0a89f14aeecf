import { NUM_CLASSES } from '../data/mnist.js';

/** Classification metrics from a confusion matrix (row = true label, column = predicted). */
export interface ClassMetrics {
  label: number;
  precision: number;
  recall: number;
  f1: number;
  support: number;
}

export interface EvaluationReport {
  accuracy: number;
  macroF1: number;
  count: number;
  loss: number;
  perClass: ClassMetrics[];
  confusion: number[][];
}

/**
 * Accuracy, per-class precision/recall/F1 and macro F1. Classes with no support and no predictions (outside a
 * --classes subset) are left out of the macro average; a class with support but no predictions has precision 0.
 */
export function evaluationReport(confusion: ArrayLike<number>, lossSum: number, numClasses = NUM_CLASSES): EvaluationReport {
  const m: number[][] = Array.from({ length: numClasses }, (_, r) => Array.from({ length: numClasses }, (_, c) => confusion[r * numClasses + c]!));
  let correct = 0;
  let total = 0;
  const perClass: ClassMetrics[] = [];
  for (let k = 0; k < numClasses; k++) {
    const tp = m[k]![k]!;
    const support = m[k]!.reduce((a, b) => a + b, 0);
    const predicted = m.reduce((a, row) => a + row[k]!, 0);
    correct += tp;
    total += support;
    const precision = predicted > 0 ? tp / predicted : 0;
    const recall = support > 0 ? tp / support : 0;
    const f1 = precision + recall > 0 ? (2 * precision * recall) / (precision + recall) : 0;
    perClass.push({ label: k, precision, recall, f1, support });
  }
  const active = perClass.filter((c) => c.support > 0 || m.some((row) => row[c.label]! > 0));
  return {
    accuracy: total > 0 ? correct / total : 0,
    macroF1: active.length > 0 ? active.reduce((a, c) => a + c.f1, 0) / active.length : 0,
    count: total,
    loss: total > 0 ? lossSum / total : 0,
    perClass,
    confusion: m,
  };
}

export function addConfusion(into: Int32Array, from: ArrayLike<number>): void {
  for (let i = 0; i < into.length; i++) into[i]! += from[i]!;
}

const pct = (v: number): string => `${(v * 100).toFixed(2)}%`;

/** The human-readable evaluation report: summary, per-class table and the confusion matrix as an aligned table. */
export function formatEvaluation(r: EvaluationReport, title = 'test'): string {
  const lines = [`${title}: accuracy ${pct(r.accuracy)}  macro F1 ${r.macroF1.toFixed(4)}  loss ${r.loss.toFixed(4)}  (${r.count} samples)`, ''];
  lines.push('class  precision  recall     f1  support');
  for (const c of r.perClass) {
    if (c.support === 0 && r.confusion.every((row) => row[c.label] === 0)) continue;
    lines.push(`${String(c.label).padStart(5)}  ${c.precision.toFixed(4).padStart(9)}  ${c.recall.toFixed(4).padStart(6)}  ${c.f1.toFixed(4).padStart(5)}  ${String(c.support).padStart(7)}`);
  }
  const width = Math.max(4, ...r.confusion.flat().map((v) => String(v).length)) + 1;
  lines.push('', `confusion matrix (rows: true label, columns: predicted)`);
  lines.push(`${'true'.padStart(5)} |${r.confusion.map((_, k) => String(k).padStart(width)).join('')}`);
  lines.push(`${'-'.repeat(6)}+${'-'.repeat(width * r.confusion.length)}`);
  r.confusion.forEach((row, k) => lines.push(`${String(k).padStart(5)} |${row.map((v) => String(v).padStart(width)).join('')}`));
  return lines.join('\n');
}
