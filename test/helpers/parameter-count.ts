import type * as tf from '@tensorflow/tfjs';

/** Every weight's element count, trainable or not (batch-norm moving statistics included). */
export function parameterCount(model: tf.LayersModel): number {
  return model.trainableWeights.concat(model.nonTrainableWeights).reduce((n, w) => n + w.shape.reduce<number>((a, b) => a * (b ?? 1), 1), 0);
}
