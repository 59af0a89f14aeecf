import * as tf from '@tensorflow/tfjs';
import { IMAGE_COLS, IMAGE_ROWS, NUM_CLASSES, type Batch } from '../data/mnist.js';
import { logitsModel } from '../model/zoo.js';
import type { Mistake } from './mistake.js';

/** Exact sums over the evaluated samples: ranks' counts add up to the whole split's (see evaluationReport). */
export interface EvaluationCounts {
  /** NUM_CLASSES × NUM_CLASSES, row = true label, column = predicted. */
  confusion: Int32Array;
  /** Softmax cross-entropy summed over the samples. */
  lossSum: number;
  count: number;
  /** The most confidently misclassified samples, highest confidence first. */
  mistakes: Mistake[];
}

export interface EvaluateOptions {
  /** Samples per forward pass (default 1000); keep it fixed where results are compared: the loss is summed per batch. */
  batchSize?: number;
  /** How many mistakes to keep (0: none). */
  mistakes?: number;
  /** When given (length ≥ indices.length), receives the predicted class of indices[i] at position i. */
  predictions?: Int32Array;
}

/** Fills a batch (normalised images and labels) for a list of sample indices. */
export type GatherBatch = (ids: ArrayLike<number>) => Batch;

/**
 * Inference-mode evaluation of a zoo model (probabilities after a layer named `head` that outputs the logits), the one
 * used by training, distributed evaluation, `eval` and `export`. Predictions are the argmax of the logits; the loss
 * is softmax cross-entropy on the logits, summed; confidence is the softmax probability of the predicted class.
 */
export class Evaluator {
  private readonly logits: tf.LayersModel;

  constructor(model: tf.LayersModel) {
    this.logits = logitsModel(model);
  }

  /**
   * Confusion counts, summed loss and the top `mistakes` over `indices`, batched; holds no tensors afterwards.
   * One device read per batch (predictions, confidences and the loss concatenated): `dataSync` throws on webgpu.
   */
  async evaluate(indices: ArrayLike<number>, gather: GatherBatch, options: EvaluateOptions = {}): Promise<EvaluationCounts> {
    const batchSize = options.batchSize ?? 1000;
    const keep = options.mistakes ?? 0;
    const confusion = new Int32Array(NUM_CLASSES * NUM_CLASSES);
    const mistakes: Mistake[] = [];
    let lossSum = 0;
    for (let start = 0; start < indices.length; start += batchSize) {
      const ids = Array.prototype.slice.call(indices, start, Math.min(start + batchSize, indices.length)) as number[];
      const batch = gather(ids);
      // [predicted class (exact in float32) × n | confidence × n | summed loss]
      const flat = tf.tidy(() => {
        const xs = tf.tensor4d(batch.x.subarray(0, batch.size * IMAGE_ROWS * IMAGE_COLS), [batch.size, IMAGE_ROWS, IMAGE_COLS, 1]);
        const logits = this.logits.predict(xs) as tf.Tensor2D;
        const labels = tf.oneHot(tf.tensor1d(batch.y.subarray(0, batch.size), 'int32'), NUM_CLASSES);
        const probs = tf.softmax(logits);
        const loss = tf.losses.softmaxCrossEntropy(labels, logits, undefined, undefined, tf.Reduction.SUM);
        return tf.concat([tf.cast(logits.argMax(1), 'float32'), probs.max(1), loss.reshape([1])]);
      });
      let values: Float32Array;
      try {
        values = await flat.data() as Float32Array;
      } finally {
        flat.dispose();
      }
      const pred = values.subarray(0, batch.size);
      const conf = values.subarray(batch.size, 2 * batch.size);
      lossSum += values[2 * batch.size]!;
      for (let i = 0; i < batch.size; i++) {
        const label = batch.y[i]!;
        const predicted = pred[i]!;
        confusion[label * NUM_CLASSES + predicted]! += 1;
        if (options.predictions) options.predictions[start + i] = predicted;
        if (keep > 0 && label !== predicted) mistakes.push({ index: ids[i]!, label, predicted, confidence: conf[i]! });
      }
      // A macrotask turn per batch: on wasm `data()` resolves as a microtask, and without this a worker's heartbeat
      // timer could not fire during a whole evaluation (the coordinator would declare it gone; issue #14).
      await new Promise<void>((resolve) => setTimeout(resolve, 0));
      // Bounded memory on large splits: trim now and then, the final sort below decides the order.
      if (mistakes.length > 4 * keep) mistakes.sort((a, b) => b.confidence - a.confidence).length = keep;
    }
    mistakes.sort((a, b) => b.confidence - a.confidence);
    if (mistakes.length > keep) mistakes.length = keep;
    return { confusion, lossSum, count: indices.length, mistakes };
  }
}
