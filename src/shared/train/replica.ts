import * as tf from '@tensorflow/tfjs';
import { MnistDdpError } from '../core/errors.js';
import { wasmView } from '../kernels/heap.js';
import { buildModel, logitsModel } from '../model/zoo.js';
import { Evaluator } from './evaluator.js';
import { createOptimizer, type FlatOptimizer, type OptimizerConfig } from './optimizers.js';
import { paramLayout, weightsDigest, type ParamLayout, type ParamSlot } from '../model/layout.js';
import { IMAGE_COLS, IMAGE_ROWS, type Batch } from '../data/mnist.js';
import { passLimitFor, passSizes, PROBE_SAMPLES, UNSPLIT_SAMPLES } from './pass-limit.js';
import { softmaxCrossEntropySum } from '../kernels/softmax-cross-entropy.js';
import { trainingForward } from './training-forward.js';

export type { Batch };

export interface ReplicaOptions {
  model: string | tf.LayersModel;
  seed: number;
  optimizer: OptimizerConfig;
  /** Layer names whose weights stay fixed (excluded from gradients, the all-reduce buffer and the optimiser). */
  freeze?: readonly string[];
  /** Most samples per forward/backward pass (pass-limit.ts); default: measured on wasm, no limit on other backends. */
  maxPassSamples?: number;
}

/**
 * One model replica: the tfjs model, a flat master copy of its trainable parameters, and the optimiser state.
 * Every worker holds one, so does single-process mode. Replicas that start from the same parameters and apply the
 * same averaged gradients stay bit-identical (checked by weightsDigest).
 *
 * Reads from the model are asynchronous (`await tensor.data()`): on webgpu, `dataSync()` of a GPU-resident tensor
 * throws in Node ("OffscreenCanvas is not defined"). Each read gathers everything it needs into one flat tensor
 * first, so a step costs one GPU→CPU transfer, not one per weight. Writes (uploads) stay synchronous.
 */
export class Replica {
  readonly model: tf.LayersModel;
  readonly logits: tf.LayersModel;
  readonly layout: ParamLayout;
  readonly params: Float32Array;
  readonly optimizer: FlatOptimizer;
  /** Inference-mode evaluation of this replica's current weights. */
  readonly evaluator: Evaluator;
  private readonly trainableVars: tf.LayerVariable[];
  private readonly syncedVars: tf.LayerVariable[];
  /** The logits in training mode, as the step differentiates them, for samples keyed from sampleKey (training-forward.ts). */
  private readonly forward: (xs: tf.Tensor, sampleKey?: number) => tf.Tensor;
  /** Samples per pass: given, or measured on the first wasm batch above UNSPLIT_SAMPLES. */
  private passLimit: number | undefined;
  /** A pass's values after the first (gradientPass), reused from pass to pass. */
  private passValues: Float32Array | undefined;

  /** Builds the replica and reads its initial parameters (asynchronous: see the class comment). */
  static async create(options: ReplicaOptions): Promise<Replica> {
    const replica = new Replica(options);
    await replica.readParams();
    return replica;
  }

  private constructor(options: ReplicaOptions) {
    this.model = typeof options.model === 'string' ? buildModel(options.model, { seed: options.seed }) : options.model;
    for (const name of options.freeze ?? []) {
      const layer = this.model.layers.find((l) => l.name === name);
      if (!layer) {
        throw new MnistDdpError('LAYER_UNKNOWN', `cannot freeze '${name}': model '${this.model.name}' has layers ${this.model.layers.map((l) => l.name).join(', ')}`, { layer: name });
      }
      layer.trainable = false;
    }
    this.logits = logitsModel(this.model);
    this.forward = trainingForward(this.logits);
    this.layout = paramLayout(this.model);
    const byName = new Map([...this.model.trainableWeights, ...this.model.nonTrainableWeights].map((w) => [w.originalName, w]));
    const lookup = (s: ParamSlot): tf.LayerVariable => byName.get(s.name)!;
    this.trainableVars = this.layout.trainable.map(lookup);
    this.syncedVars = this.layout.synced.map(lookup);
    this.params = new Float32Array(this.layout.paramCount);
    this.optimizer = createOptimizer(options.optimizer, this.layout.paramCount);
    this.evaluator = new Evaluator(this.model);
    this.passLimit = options.maxPassSamples;
  }

  /** Copies the model's current trainable weights into `params`. */
  private async readParams(): Promise<void> {
    this.params.set(await readFlat(this.trainableVars));
  }

  /** Writes `params` (trainable) and optionally synced buffers into the model's variables. */
  writeParams(synced?: Float32Array): void {
    writeVars(this.trainableVars, this.layout.trainable, this.params, 0);
    if (synced) writeVars(this.syncedVars, this.layout.synced, synced, this.layout.paramCount);
  }

  /** Every model weight, in model.weights order: what a joining replica or a checkpoint needs (frozen layers too). */
  allWeights(): Promise<Float32Array> {
    return readFlat(this.model.weights);
  }

  setAllWeights(weights: Float32Array): void {
    const expected = this.model.weights.reduce((n, w) => n + w.shape.reduce<number>((a, b) => a * (b ?? 1), 1), 0);
    if (weights.length !== expected) {
      throw new MnistDdpError('HANDSHAKE_MISMATCH', `received ${weights.length} weight values; model '${this.model.name}' has ${expected}`);
    }
    let offset = 0;
    const offsets = new Map<string, number>();
    const tensors = this.model.weights.map((w) => {
      const shape = w.shape.map((d) => d ?? 1);
      const size = shape.reduce((a, b) => a * b, 1);
      const t = tf.tensor(weights.slice(offset, offset + size), shape); // a copy on every backend (writeVars says why)
      offsets.set(w.originalName, offset);
      offset += size;
      return t;
    });
    this.model.setWeights(tensors);
    tf.dispose(tensors);
    // The master copy comes from the same host array, not from a read-back of what was just uploaded.
    for (const slot of this.layout.trainable) {
      const from = offsets.get(slot.name)!;
      this.params.set(weights.subarray(from, from + slot.size), slot.offset);
    }
  }

  /** Samples per forward/backward pass: given, measured (wasm, after the first batch above UNSPLIT_SAMPLES), or not yet known. */
  get maxPassSamples(): number | undefined {
    return this.passLimit;
  }

  digest(): string {
    return weightsDigest(this.params);
  }

  /**
   * Fills `out` (layout.bufferLength, then zeros to its end) with this rank's contribution: gradients of the SUMMED
   * loss over the batch, synced buffers × batch size, the summed loss and the batch size. Summing these over ranks and
   * dividing by the total count gives the exact mean over the global batch, however unevenly it was split. An empty
   * batch contributes zeros. A batch above the pass limit (pass-limit.ts) is computed in passes whose contributions are
   * added the same way; each pass starts from the step's batch-norm moving statistics, as each rank does.
   */
  async computeGradients(batch: Batch, out: Float32Array): Promise<void> {
    if (batch.size === 0) {
      out.fill(0);
      return;
    }
    const { layout } = this;
    const passes = passSizes(batch.size, await this.passLimitFor(batch));
    const moving = passes.length > 1 && this.syncedVars.length > 0 ? await readFlat(this.syncedVars) : undefined;
    let start = 0;
    for (const n of passes) {
      if (moving && start > 0) writeVars(this.syncedVars, layout.synced, moving, layout.paramCount);
      if (start === 0) {
        await this.gradientPass(batch, start, n, out);
        for (let i = layout.paramCount; i < layout.lossIndex; i++) out[i] = out[i]! * n;
      } else {
        const values = await this.gradientPass(batch, start, n, (this.passValues ??= new Float32Array(layout.lossIndex + 1)));
        for (let i = 0; i < layout.paramCount; i++) out[i] = out[i]! + values[i]!;
        // Rounded as a rank's own buffer holds it, before the sum: passes add up exactly as ranks do.
        for (let i = layout.paramCount; i < layout.lossIndex; i++) out[i] = out[i]! + Math.fround(values[i]! * n);
        out[layout.lossIndex] = out[layout.lossIndex]! + values[layout.lossIndex]!;
      }
      start += n;
    }
    out[layout.countIndex] = batch.size;
    // Past the count (other ranks' health reports, gradient-health.ts) the contribution is 0; every slot before it
    // was written by the first pass.
    out.fill(0, layout.countIndex + 1);
  }

  /**
   * Writes [gradients | synced buffers | loss] of samples [start, start + n) of the batch into `into`, in the
   * all-reduce buffer's layout (up to lossIndex inclusive), and returns it. One read per pass: on wasm each part is
   * copied from a view of wasm memory (no concatenation kernel, no reshapes); elsewhere the parts are concatenated on
   * the device and read once.
   */
  private async gradientPass(batch: Batch, start: number, n: number, into: Float32Array): Promise<Float32Array> {
    const { grads, loss } = this.gradientParts(batch, start, n);
    // Read after the forward pass: training-mode batch norm has updated its moving statistics by now.
    const parts = [...grads, ...this.syncedVars.map((v) => v.read()), loss];
    try {
      if (tf.getBackend() !== 'wasm') {
        const flat = tf.tidy(() => tf.concat(parts.map((p) => p.reshape([-1]))));
        try {
          into.set(await flat.data() as Float32Array);
          return into;
        } finally {
          flat.dispose();
        }
      }
      const { trainable, synced, lossIndex } = this.layout;
      const offsets = [...trainable.map((s) => s.offset), ...synced.map((s) => s.offset), lossIndex];
      parts.forEach((part, i) => into.set(wasmView(part)!, offsets[i]));
      return into;
    } finally {
      tf.dispose([...grads, loss]);
    }
  }

  /** Each trainable weight's gradient (in layout order) and the loss, of samples [start, start + n) of the batch. */
  private gradientParts(batch: Batch, start: number, n: number): { grads: tf.Tensor[]; loss: tf.Scalar } {
    const pixels = IMAGE_ROWS * IMAGE_COLS;
    return tf.tidy(() => {
      const xs = tf.tensor4d(batch.x.subarray(start * pixels, (start + n) * pixels), [n, IMAGE_ROWS, IMAGE_COLS, 1]);
      const labels = tf.tensor1d(batch.y.subarray(start, start + n), 'int32');
      const vars = this.trainableVars.map((v) => v.read() as tf.Variable);
      const { value, grads } = tf.variableGrads(
        () => softmaxCrossEntropySum(this.forward(xs, (batch.sampleKey ?? 0) + start) as tf.Tensor2D, labels),
        vars,
      );
      // A weight the loss does not reach has no gradient: it contributes zeros, as before.
      return { grads: this.layout.trainable.map((slot, i) => grads[vars[i]!.name] ?? tf.zeros([slot.size])), loss: value };
    });
  }

  /**
   * The pass limit: given, or on wasm measured once, on the first batch above UNSPLIT_SAMPLES, from the tensor bytes
   * of a PROBE_SAMPLES pass (tf.profile's peak over the bytes held before it). The probe's side effect on the
   * batch-norm moving statistics is undone.
   */
  private async passLimitFor(batch: Batch): Promise<number> {
    if (this.passLimit !== undefined) return this.passLimit;
    if (batch.size <= UNSPLIT_SAMPLES) return batch.size;
    if (tf.getBackend() !== 'wasm') return (this.passLimit = Infinity);
    const moving = this.syncedVars.length > 0 ? await readFlat(this.syncedVars) : undefined;
    const before = tf.memory().numBytes;
    const profile = await tf.profile(() => {
      const { grads, loss } = this.gradientParts(batch, 0, PROBE_SAMPLES);
      tf.dispose([...grads, loss]);
    });
    if (moving) writeVars(this.syncedVars, this.layout.synced, moving, this.layout.paramCount);
    return (this.passLimit = passLimitFor(profile.peakBytes - before, PROBE_SAMPLES));
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
    // v - v is 0 for a finite v and NaN otherwise: one branch after the loop instead of one per value (0.57 vs 0.94 ms
    // over cnn-large's buffer in a scratch loop benchmark: bench/RESULTS.md, 2026-12-05). The values are scaled in
    // place either way; the parameters are untouched until the optimiser runs.
    let nonFinite = 0;
    for (let i = 0; i < end; i++) {
      const v = reduced[i]! * scale;
      nonFinite += v - v;
      reduced[i] = v;
    }
    if (nonFinite !== 0) {
      const i = reduced.subarray(0, end).findIndex((v) => !Number.isFinite(v));
      throw nonFiniteGradient(layout, i, reduced[i]!, step);
    }
    this.optimizer.apply(this.params, reduced, lr);
    this.writeParams(layout.synced.length > 0 ? reduced.subarray(layout.paramCount, layout.lossIndex) : undefined);
    return { loss: reduced[layout.lossIndex]! / count, count };
  }
}

/**
 * NON_FINITE_GRADIENT for the value at `index` of the reduced buffer, naming its weight. Built outside the loop that
 * finds it: a closure over that loop's index would make V8 keep the index in a context object.
 */
function nonFiniteGradient(layout: ParamLayout, index: number, value: number, step: number): MnistDdpError {
  const slot = [...layout.trainable, ...layout.synced].find((s) => index >= s.offset && index < s.offset + s.size);
  return new MnistDdpError('NON_FINITE_GRADIENT', `step ${step}: gradient of '${slot?.name ?? index}' is ${value}; the update was not applied. Lower the learning rate or check the input data.`, { step, weight: slot?.name });
}

/**
 * Writes `source` (laid out as `slots`, whose offsets start at `base`) into the variables. The wasm backend copies
 * what it is given into its memory at once, so it gets views. Others get copies: tfjs's cpu backend keeps the typed
 * array it is given, and webgpu uploads it only when the variable is next read. A view would upload whatever
 * `source` (the all-reduce buffer, reused every step) holds by then: on webgpu the batch-norm moving statistics read
 * back as the next step's partial sums and collapsed (test/integration/webgpu-training.test.ts).
 */
function writeVars(vars: tf.LayerVariable[], slots: ParamSlot[], source: Float32Array, base: number): void {
  const copies = tf.getBackend() !== 'wasm';
  slots.forEach((slot, i) => {
    const [from, to] = [slot.offset - base, slot.offset - base + slot.size];
    const value = tf.tensor(copies ? source.slice(from, to) : source.subarray(from, to), slot.shape);
    vars[i]!.write(value);
    value.dispose();
  });
}

/** The values of several variables, back to back, in ONE device read (concatenated on the device first). */
async function readFlat(vars: readonly tf.LayerVariable[]): Promise<Float32Array> {
  if (vars.length === 0) return new Float32Array(0);
  const flat = tf.tidy(() => tf.concat(vars.map((v) => v.read().reshape([-1]))));
  try {
    return await flat.data() as Float32Array;
  } finally {
    flat.dispose();
  }
}
