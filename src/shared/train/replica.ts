import type { Mistake } from './mistake.js';
import * as tf from '@tensorflow/tfjs';
import { MnistDdpError } from '../core/errors.js';
import { buildModel, logitsModel } from '../model/zoo.js';
import { createOptimizer, type FlatOptimizer, type OptimizerConfig } from './optimizers.js';
import { paramLayout, weightsDigest, type ParamLayout, type ParamSlot } from '../model/layout.js';
import { IMAGE_COLS, IMAGE_ROWS, NUM_CLASSES, type Batch } from '../data/mnist.js';

export type { Batch };

export interface ReplicaOptions {
  model: string | tf.LayersModel;
  seed: number;
  optimizer: OptimizerConfig;
  /** Layer names whose weights stay fixed (excluded from gradients, the all-reduce buffer and the optimiser). */
  freeze?: readonly string[];
}

/**
 * One model replica: the tfjs model, a flat master copy of its trainable parameters, and the optimiser state.
 * Every worker holds one, so does single-process mode. Replicas that start from the same parameters and apply the
 * same averaged gradients stay bit-identical (checked by weightsDigest).
 */
export class Replica {
  readonly model: tf.LayersModel;
  readonly logits: tf.LayersModel;
  readonly layout: ParamLayout;
  readonly params: Float32Array;
  readonly optimizer: FlatOptimizer;
  private readonly trainableVars: tf.LayerVariable[];
  private readonly syncedVars: tf.LayerVariable[];

  constructor(options: ReplicaOptions) {
    this.model = typeof options.model === 'string' ? buildModel(options.model, { seed: options.seed }) : options.model;
    for (const name of options.freeze ?? []) {
      const layer = this.model.layers.find((l) => l.name === name);
      if (!layer) {
        throw new MnistDdpError('LAYER_UNKNOWN', `cannot freeze '${name}': model '${this.model.name}' has layers ${this.model.layers.map((l) => l.name).join(', ')}`, { layer: name });
      }
      layer.trainable = false;
    }
    this.logits = logitsModel(this.model);
    this.layout = paramLayout(this.model);
    const byName = new Map([...this.model.trainableWeights, ...this.model.nonTrainableWeights].map((w) => [w.originalName, w]));
    const lookup = (s: ParamSlot): tf.LayerVariable => byName.get(s.name)!;
    this.trainableVars = this.layout.trainable.map(lookup);
    this.syncedVars = this.layout.synced.map(lookup);
    this.params = new Float32Array(this.layout.paramCount);
    this.readParams();
    this.optimizer = createOptimizer(options.optimizer, this.layout.paramCount);
  }

  /** Copies the model's current trainable weights into `params`. */
  readParams(): void {
    this.layout.trainable.forEach((slot, i) => this.params.set(this.trainableVars[i]!.read().dataSync() as Float32Array, slot.offset));
  }

  /** Writes `params` (trainable) and optionally synced buffers into the model's variables. */
  writeParams(synced?: Float32Array): void {
    const write = (vars: tf.LayerVariable[], slots: ParamSlot[], source: Float32Array, base: number): void => {
      slots.forEach((slot, i) => {
        const value = tf.tensor(source.subarray(slot.offset - base, slot.offset - base + slot.size), slot.shape);
        vars[i]!.write(value);
        value.dispose();
      });
    };
    write(this.trainableVars, this.layout.trainable, this.params, 0);
    if (synced) write(this.syncedVars, this.layout.synced, synced, this.layout.paramCount);
  }

  /** Current synced buffers (batch-norm statistics), laid out as in the all-reduce buffer after the parameters. */
  syncedBuffers(): Float32Array {
    const out = new Float32Array(this.layout.bufferLength - 2 - this.layout.paramCount);
    this.layout.synced.forEach((slot, i) => out.set(this.syncedVars[i]!.read().dataSync() as Float32Array, slot.offset - this.layout.paramCount));
    return out;
  }

  /** Every model weight, in model.weights order: what a joining replica or a checkpoint needs (frozen layers too). */
  allWeights(): Float32Array {
    const values = this.model.weights.map((w) => w.read().dataSync() as Float32Array);
    const out = new Float32Array(values.reduce((n, v) => n + v.length, 0));
    let offset = 0;
    for (const v of values) {
      out.set(v, offset);
      offset += v.length;
    }
    return out;
  }

  setAllWeights(weights: Float32Array): void {
    const expected = this.model.weights.reduce((n, w) => n + w.shape.reduce<number>((a, b) => a * (b ?? 1), 1), 0);
    if (weights.length !== expected) {
      throw new MnistDdpError('HANDSHAKE_MISMATCH', `received ${weights.length} weight values; model '${this.model.name}' has ${expected}`);
    }
    let offset = 0;
    const tensors = this.model.weights.map((w) => {
      const shape = w.shape.map((d) => d ?? 1);
      const size = shape.reduce((a, b) => a * b, 1);
      const t = tf.tensor(weights.subarray(offset, offset + size), shape);
      offset += size;
      return t;
    });
    this.model.setWeights(tensors);
    tf.dispose(tensors);
    this.readParams();
  }

  digest(): string {
    return weightsDigest(this.params);
  }

  /**
   * Fills `out` (layout.bufferLength) with this rank's contribution: gradients of the SUMMED loss over the batch,
   * synced buffers × batch size, the summed loss and the batch size. Summing these over ranks and dividing by the
   * total count gives the exact mean over the global batch, however unevenly it was split. An empty batch
   * contributes zeros.
   */
  computeGradients(batch: Batch, out: Float32Array): void {
    out.fill(0);
    if (batch.size === 0) return;
    const { layout } = this;
    const grads = tf.tidy(() => {
      const xs = tf.tensor4d(batch.x.subarray(0, batch.size * IMAGE_ROWS * IMAGE_COLS), [batch.size, IMAGE_ROWS, IMAGE_COLS, 1]);
      const labels = tf.oneHot(tf.tensor1d(batch.y.subarray(0, batch.size), 'int32'), NUM_CLASSES);
      const vars = this.trainableVars.map((v) => v.read() as tf.Variable);
      return tf.variableGrads(
        () => tf.losses.softmaxCrossEntropy(labels, this.logits.apply(xs, { training: true }) as tf.Tensor2D, undefined, undefined, tf.Reduction.SUM) as tf.Scalar,
        vars,
      );
    });
    this.layout.trainable.forEach((slot, i) => {
      const g = grads.grads[(this.trainableVars[i]!.read() as tf.Variable).name];
      if (g) out.set(g.dataSync() as Float32Array, slot.offset);
    });
    out[layout.lossIndex] = grads.value.dataSync()[0]!;
    out[layout.countIndex] = batch.size;
    tf.dispose(grads.grads);
    grads.value.dispose();
    if (layout.synced.length > 0) {
      const synced = this.syncedBuffers();
      for (let i = 0; i < synced.length; i++) out[layout.paramCount + i] = synced[i]! * batch.size;
    }
  }

  /**
   * Applies an all-reduced buffer: divides by the global sample count, refuses non-finite values (nothing is
   * applied, so the replica loses nothing), steps the optimiser and writes the weights back.
   */
  applyReduced(reduced: Float32Array, lr: number, step: number): { loss: number; count: number } {
    const { layout } = this;
    const count = reduced[layout.countIndex]!;
    if (count <= 0) return { loss: NaN, count: 0 };
    const scale = 1 / count;
    const end = layout.lossIndex;
    for (let i = 0; i < end; i++) {
      const v = reduced[i]! * scale;
      if (!Number.isFinite(v)) {
        const slot = [...layout.trainable, ...layout.synced].find((s) => i >= s.offset && i < s.offset + s.size);
        throw new MnistDdpError('NON_FINITE_GRADIENT', `step ${step}: gradient of '${slot?.name ?? i}' is ${v}; the update was not applied. Lower the learning rate or check the input data.`, { step, weight: slot?.name });
      }
      reduced[i] = v;
    }
    this.optimizer.apply(this.params, reduced, lr);
    this.writeParams(layout.synced.length > 0 ? reduced.subarray(layout.paramCount, layout.lossIndex) : undefined);
    return { loss: reduced[layout.lossIndex]! / count, count };
  }

  /**
   * Confusion counts (row = true label, column = predicted), summed loss, and the `mistakes` most confidently
   * misclassified samples, over `indices` in inference mode. `gather` fills a batch for a list of indices.
   */
  evaluate(indices: ArrayLike<number>, gather: (ids: ArrayLike<number>) => Batch, options: { batchSize?: number; mistakes?: number } = {}): EvaluationCounts {
    const batchSize = options.batchSize ?? 1000;
    const keep = options.mistakes ?? 0;
    const confusion = new Int32Array(NUM_CLASSES * NUM_CLASSES);
    const mistakes: Mistake[] = [];
    let lossSum = 0;
    for (let start = 0; start < indices.length; start += batchSize) {
      const ids = Array.prototype.slice.call(indices, start, Math.min(start + batchSize, indices.length)) as number[];
      const batch = gather(ids);
      const [pred, conf, loss] = tf.tidy(() => {
        const xs = tf.tensor4d(batch.x.subarray(0, batch.size * IMAGE_ROWS * IMAGE_COLS), [batch.size, IMAGE_ROWS, IMAGE_COLS, 1]);
        const logits = this.logits.predict(xs) as tf.Tensor2D;
        const labels = tf.oneHot(tf.tensor1d(batch.y.subarray(0, batch.size), 'int32'), NUM_CLASSES);
        const probs = tf.softmax(logits);
        return [logits.argMax(1).dataSync(), probs.max(1).dataSync(), tf.losses.softmaxCrossEntropy(labels, logits, undefined, undefined, tf.Reduction.SUM).dataSync()[0]!] as const;
      });
      lossSum += loss;
      for (let i = 0; i < batch.size; i++) {
        const label = batch.y[i]!;
        const predicted = pred[i]!;
        confusion[label * NUM_CLASSES + predicted]! += 1;
        if (keep > 0 && label !== predicted) mistakes.push({ index: ids[i]!, label, predicted, confidence: conf[i]! });
      }
      if (mistakes.length > 4 * keep) mistakes.sort((a, b) => b.confidence - a.confidence).length = keep;
    }
    mistakes.sort((a, b) => b.confidence - a.confidence);
    if (mistakes.length > keep) mistakes.length = keep;
    return { confusion, lossSum, count: indices.length, mistakes };
  }
}

export type { Mistake };

export interface EvaluationCounts {
  confusion: Int32Array;
  lossSum: number;
  count: number;
  mistakes: Mistake[];
}
