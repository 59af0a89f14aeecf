import { NUM_CLASSES } from '../shared/data/mnist.js';
import { addConfusion } from '../shared/train/evaluation.js';
import type { EvaluationCounts } from '../shared/train/evaluator.js';
import type { Mistake } from '../shared/train/mistake.js';
import type { EvalSplit, EvaluationCountsWire } from '../shared/wire/control-payloads.js';
import type { ControlServer } from './control-server.js';
import type { WorkerRecord } from './membership.js';
import type { ReplyCollector } from './stall.js';

/**
 * Sums the ranks' exact counts over their disjoint shares of a split (no padding, so the sums are the whole
 * split's) and keeps the `mistakes` most confident misclassifications among all ranks' candidates.
 */
export function mergeEvaluations(shares: Iterable<EvaluationCountsWire>, mistakes: number): EvaluationCounts {
  const confusion = new Int32Array(NUM_CLASSES * NUM_CLASSES);
  let lossSum = 0;
  let count = 0;
  const all: Mistake[] = [];
  for (const share of shares) {
    addConfusion(confusion, share.confusion);
    lossSum += share.lossSum;
    count += share.count;
    all.push(...share.mistakes);
  }
  all.sort((a, b) => b.confidence - a.confidence);
  return { confusion, lossSum, count, mistakes: all.slice(0, mistakes) };
}

/** Asks every one of `workers` to evaluate its share of `split` and merges the replies. */
export async function evaluateOnWorkers(
  server: ControlServer, replies: ReplyCollector, workers: readonly WorkerRecord[], request: { requestId: number; split: EvalSplit; mistakes: number; timeoutMs: number },
): Promise<EvaluationCounts> {
  const { requestId, split, mistakes } = request;
  const pending = replies.collect('evaluation', workers, request.timeoutMs, `${split} evaluation`, { match: (m) => m.requestId === requestId });
  await server.broadcast(workers, () => ({ type: 'evaluate', requestId, split, mistakes }), pending);
  return mergeEvaluations((await pending).values(), mistakes);
}
