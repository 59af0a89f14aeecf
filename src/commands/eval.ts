import { initBackend } from '../shared/core/backend.js';
import type { EvalConfig } from '../shared/core/config.js';
import { planDataset } from '../shared/data/dataset-plan.js';
import { evaluationReport, formatEvaluation, type EvaluationReport } from '../shared/train/evaluation.js';
import { Evaluator } from '../shared/train/evaluator.js';
import { componentLogger } from '../shared/core/log.js';
import { gatherBatch } from '../shared/data/mnist.js';
import { loadModelDir } from '../shared/model/io.js';

/** `mnist-ddp eval --checkpoint DIR`: the evaluation report of a saved model on the test set. */
export async function runEval(opts: EvalConfig, io: { stdout(s: string): void }): Promise<EvaluationReport> {
  const log = componentLogger('eval');
  await initBackend(opts.backend, log);
  const model = await loadModelDir(opts.checkpoint);
  try {
    const plan = planDataset({ seed: 0, validationSize: 0, labelFraction: 1, classes: opts.classes, dataDir: opts.dataDir });
    const counts = await new Evaluator(model).evaluate(plan.test, (ids) => gatherBatch(plan.data.test.images, plan.data.test.labels, ids));
    const report = evaluationReport(counts.confusion, counts.lossSum);
    io.stdout(opts.json ? JSON.stringify({ accuracy: report.accuracy, macroF1: report.macroF1, count: report.count, loss: report.loss, perClass: report.perClass, confusion: report.confusion }) : formatEvaluation(report, 'test'));
    return report;
  } finally {
    model.dispose();
  }
}
