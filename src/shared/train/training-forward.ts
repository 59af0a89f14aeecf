import * as tf from '@tensorflow/tfjs';
import { MIN_ROWS } from '../kernels/batch-norm.js';
import { wasmView } from '../kernels/heap.js';
import { BATCH_NORM_TRAIN_GRAD, batchNormTraining } from '../kernels/batch-norm-train.js';
import { convBatchNorm, CONV_BATCH_NORM_GRAD } from '../kernels/conv-batch-norm.js';
import { convReluPool, CONV_RELU_POOL_GRAD, type ConvReluPoolAttrs } from '../kernels/conv-relu-pool.js';
import { codesApply } from '../kernels/pool-codes.js';
import { DROPOUT, dropoutOp } from '../kernels/dropout.js';
import { convKernelsEnabled } from '../kernels/winograd.js';
import { dropoutMask, dropoutParams } from './dropout.js';

/**
 * One step of the plan: a layer run by tfjs-layers, or layers run another way. `layers` are the layers a step
 * covers; the WASM_KINDS steps run them as tfjs-layers does where our wasm kernels are not registered.
 */
type Step = { layers: tf.layers.Layer[] } & (
  | { kind: 'layer' }
  | { kind: 'conv-relu-pool'; kernel: tf.LayerVariable; bias: tf.LayerVariable; trainable: () => boolean; attrs: ConvReluPoolAttrs }
  | { kind: 'conv'; kernel: tf.LayerVariable; strides: [number, number]; pad: 'valid' | 'same'; dilations: [number, number] }
  | { kind: 'batch-norm' } & BatchNormPart
  | { kind: 'conv-batch-norm'; conv: Extract<Step, { kind: 'conv' }>; trainable: () => boolean } & BatchNormPart
  | { kind: 'dropout'; rate: number; seed: number }
);

/** A batch-norm step's layer (→ ReLU (→ pool)) as batch-norm-train.ts computes it. */
interface BatchNormPart {
  bn: BatchNormWeights;
  epsilon: number;
  momentum: number;
  relu: boolean;
  pool: boolean;
}

/** The kinds whose ops are mnist-ddp's wasm kernels. */
const WASM_KINDS: ReadonlySet<Step['kind']> = new Set(['conv-relu-pool', 'conv', 'batch-norm', 'conv-batch-norm']);

/** A layer's weight by its name within the layer (`kernel`, `gamma`, …), looked up once when the plan is built. */
const weightOf = (layer: tf.layers.Layer, name: string): tf.LayerVariable | undefined =>
  layer.weights.find((w) => w.originalName === `${layer.name}/${name}`);

interface BatchNormWeights {
  gamma: tf.LayerVariable;
  beta: tf.LayerVariable;
  movingMean: tf.LayerVariable;
  movingVariance: tf.LayerVariable;
}

/** Layer config fields the plan reads (tfjs-layers' getConfig(), serialised). */
interface ConvConfig {
  filters?: number;
  strides?: number | number[];
  padding?: string;
  dataFormat?: string;
  dilationRate?: number | number[];
  activation?: string;
  useBias?: boolean;
  kernelRegularizer?: unknown;
  biasRegularizer?: unknown;
  activityRegularizer?: unknown;
}
interface PoolConfig {
  poolSize?: number | number[];
  strides?: number | number[] | null;
  padding?: string;
  dataFormat?: string;
}

const pair = (v: number | number[] | null | undefined): number[] | undefined =>
  v == null ? undefined : Array.isArray(v) ? v : [v, v];
const isPair = (v: number | number[] | null | undefined, n: number): boolean => {
  const p = pair(v);
  return p !== undefined && p.length === 2 && p[0] === n && p[1] === n;
};

/** The conv-block step when `conv` then `pool` are a Conv2D(bias, ReLU) and a 2×2/2 MaxPooling2D the op takes. */
function convReluPoolStep(conv: tf.layers.Layer, pool: tf.layers.Layer | undefined): Step | undefined {
  if (conv.getClassName() !== 'Conv2D') return undefined;
  const c = conv.getConfig() as ConvConfig;
  const strides = pair(c.strides);
  const convOk = c.activation === 'relu' && c.useBias === true && c.dataFormat === 'channelsLast' && isPair(c.dilationRate, 1) &&
    (c.padding === 'valid' || c.padding === 'same') && strides?.length === 2 && codesApply(c.filters ?? 0) &&
    c.kernelRegularizer == null && c.biasRegularizer == null && c.activityRegularizer == null;
  const poolOk = isPool2x2(pool);
  const [kernel, bias] = [weightOf(conv, 'kernel'), weightOf(conv, 'bias')];
  if (!convOk || !poolOk || !kernel || !bias) return undefined;
  return {
    kind: 'conv-relu-pool', layers: [conv, pool!], kernel, bias, trainable: () => conv.trainable,
    attrs: { strides: strides as [number, number], pad: c.padding as 'valid' | 'same' },
  };
}

interface BatchNormConfig {
  axis?: number;
  momentum?: number;
  epsilon?: number;
  center?: boolean;
  scale?: boolean;
  betaRegularizer?: unknown;
  gammaRegularizer?: unknown;
}

/** Whether `pool` is a 2×2, stride-2, unpadded, channels-last MaxPooling2D (the pools the fused ops take). */
function isPool2x2(pool: tf.layers.Layer | undefined): boolean {
  if (pool?.getClassName() !== 'MaxPooling2D') return false;
  const p = pool.getConfig() as PoolConfig;
  return isPair(p.poolSize, 2) && (p.strides == null || isPair(p.strides, 2)) && p.padding === 'valid' && p.dataFormat === 'channelsLast';
}

/**
 * The batch-norm step when `bn` is a BatchNormalization over the last axis with scale and offset (optionally followed
 * by a ReLU Activation, which joins the op, and then by a 2×2 max pool over channels in fours, which joins it too),
 * as batch-norm-train.ts computes it.
 */
function batchNormStep(bn: tf.layers.Layer, next: tf.layers.Layer | undefined, afterNext: tf.layers.Layer | undefined): Step | undefined {
  if (bn.getClassName() !== 'BatchNormalization') return undefined;
  const c = bn.getConfig() as BatchNormConfig;
  const shape = (bn.input as tf.SymbolicTensor).shape;
  const rank = shape.length;
  const [gamma, beta, movingMean, movingVariance] = ['gamma', 'beta', 'moving_mean', 'moving_variance'].map((n) => weightOf(bn, n));
  const ok = (c.axis === -1 || c.axis === rank - 1) && c.center === true && c.scale === true && c.betaRegularizer == null && c.gammaRegularizer == null &&
    typeof c.epsilon === 'number' && typeof c.momentum === 'number' && gamma && beta && movingMean && movingVariance;
  if (!ok) return undefined;
  const relu = next?.getClassName() === 'Activation' && (next.getConfig() as { activation?: string }).activation === 'relu';
  const pool = relu && rank === 4 && codesApply(shape[3] ?? 0) && isPool2x2(afterNext);
  return {
    kind: 'batch-norm', layers: pool ? [bn, next!, afterNext!] : relu ? [bn, next!] : [bn], bn: { gamma, beta, movingMean, movingVariance },
    epsilon: c.epsilon!, momentum: c.momentum!, relu, pool,
  };
}

/**
 * tfjs-layers' moving-average update of a BatchNormalization variable (normalization.js), orig − (orig − value) ·
 * (1 − momentum), each step rounded to float32 as its Sub, Mul and Sub kernels round it: in JavaScript over views of
 * wasm memory (the batch-norm step runs on wasm only), one tensor written per variable instead of five engine calls
 * and a scalar upload (cnn-large's five layers: about 1.4 ms of a step's JavaScript in a CPU profile). Rounding the
 * float64 result of one operation on float32 values to float32 gives the float32 operation's result exactly.
 */
function movingAverage(variable: tf.LayerVariable, value: tf.Tensor, momentum: number): void {
  const [orig, batch] = [wasmView(variable.read())!, wasmView(value)!];
  const keep = Math.fround(1 - momentum);
  const next = new Float32Array(orig.length);
  for (let i = 0; i < next.length; i++) next[i] = orig[i]! - Math.fround(Math.fround(orig[i]! - batch[i]!) * keep);
  const t = tf.tensor(next, variable.shape as number[]);
  variable.write(t);
  t.dispose();
}

/**
 * A Conv2D without bias or activation (`cnn-large`'s, before batch norm) as a plain conv2d: tfjs-layers runs it as
 * fused.conv2d, whose gradient (a tf.customGrad) computes the input's gradient even where nothing needs it (a first
 * layer's images: 1.9 ms of a `cnn-large` step); Conv2D's registered gradient computes each input's on demand.
 */
function plainConvStep(conv: tf.layers.Layer): Step | undefined {
  if (conv.getClassName() !== 'Conv2D') return undefined;
  const c = conv.getConfig() as ConvConfig;
  const strides = pair(c.strides);
  const dilations = pair(c.dilationRate);
  const ok = c.activation === 'linear' && c.useBias === false && c.dataFormat === 'channelsLast' && (c.padding === 'valid' || c.padding === 'same') &&
    strides?.length === 2 && dilations?.length === 2 && c.kernelRegularizer == null && c.activityRegularizer == null;
  const kernel = weightOf(conv, 'kernel');
  if (!ok || !kernel) return undefined;
  return { kind: 'conv', layers: [conv], kernel, strides: strides as [number, number], pad: c.padding as 'valid' | 'same', dilations: dilations as [number, number] };
}

/** A Dropout over whole samples (no noiseShape) as dropout.ts draws it; `index` (its place in the chain) tells unseeded ones apart. */
function dropoutStep(layer: tf.layers.Layer, index: number): Step | undefined {
  if (layer.getClassName() !== 'Dropout') return undefined;
  const c = layer.getConfig() as { rate?: number; noiseShape?: unknown; seed?: number };
  const rate = c.rate;
  if (c.noiseShape != null || typeof rate !== 'number' || !(rate >= 0 && rate < 1)) return undefined;
  return { kind: 'dropout', layers: [layer], rate, seed: ((c.seed ?? 0) ^ Math.imul(index + 1, 0x9e3779b9)) >>> 0 };
}

/** The model's layers in order when it is a chain (each layer takes the previous one's only output); else undefined. */
function chainOf(model: tf.LayersModel): tf.layers.Layer[] | undefined {
  const layers = model.layers.filter((l) => l.getClassName() !== 'InputLayer');
  const linked = layers.every((layer, i) => {
    const nodes = layer.inboundNodes;
    if (nodes.length !== 1 || nodes[0]!.inboundLayers.length !== 1) return false;
    const from = nodes[0]!.inboundLayers[0]!;
    return i === 0 ? from.getClassName() === 'InputLayer' : from === layers[i - 1];
  });
  const output = model.outputs.length === 1 ? model.outputs[0]!.sourceLayer : undefined;
  return linked && layers.length > 0 && output === layers[layers.length - 1] ? layers : undefined;
}

/**
 * A plain convolution step followed by a batch-norm step, as one convBatchNorm op (kernels/conv-batch-norm.ts), when
 * the convolution is undilated (the op's kernels are).
 */
function convBatchNormStep(layers: tf.layers.Layer[], i: number): Step | undefined {
  const conv = plainConvStep(layers[i]!);
  const bn = layers[i + 1] && batchNormStep(layers[i + 1]!, layers[i + 2], layers[i + 3]);
  if (conv?.kind !== 'conv' || bn?.kind !== 'batch-norm' || !isPair(conv.dilations, 1)) return undefined;
  const convLayer = layers[i]!;
  return { ...bn, kind: 'conv-batch-norm', layers: [convLayer, ...bn.layers], conv, trainable: () => convLayer.trainable };
}

function planOf(layers: tf.layers.Layer[]): Step[] {
  const steps: Step[] = [];
  for (let i = 0; i < layers.length;) {
    const layer = layers[i]!;
    const step: Step = convReluPoolStep(layer, layers[i + 1]) ?? convBatchNormStep(layers, i) ?? batchNormStep(layer, layers[i + 1], layers[i + 2]) ??
      plainConvStep(layer) ?? dropoutStep(layer, i) ?? { kind: 'layer', layers: [layer] };
    steps.push(step);
    i += step.layers.length;
  }
  return steps;
}

/**
 * The forward pass a training step differentiates (training mode: dropout on, batch norm on batch statistics), for
 * samples keyed from `sampleKey` on (Batch.sampleKey).
 *
 * In a chain model:
 * - each Dropout draws its masks per sample from the sample's key (train/dropout.ts), on every backend: tfjs-layers'
 *   seeded Dropout drops the same units at every step;
 * and on wasm with mnist-ddp's kernels:
 * - each Conv2D(bias, ReLU) → MaxPooling2D(2×2, stride 2) pair runs as one convReluPool op (kernels/conv-relu-pool.ts):
 *   four fewer passes over the convolution's output per step, forward and backward;
 * - each BatchNormalization (→ ReLU (→ 2×2 MaxPooling2D)) runs as one batchNormTraining op (kernels/batch-norm-train.ts),
 *   which updates the layer's moving mean and variance with tfjs-layers' own arithmetic;
 * - each Conv2D without bias or activation runs as tf.conv2d (plainConvStep), and as one convBatchNorm op with such a
 *   batch norm after it (kernels/conv-batch-norm.ts: batch norm's input gradient is computed inside the convolution's
 *   gradient kernels, never written).
 * Every other layer runs as tfjs-layers runs it (`layer.apply`, as the model's own executor calls it), and so do
 * the wasm steps' layers on other backends or with our kernels switched off (winograd.ts setConvKernelsEnabled).
 * The model's input is treated as a constant (the first conv block computes no gradient for it): differentiate
 * with respect to the weights only.
 * Models that are not a chain run `model.apply` unchanged. Weights, layer names and the saved model are untouched:
 * evaluation, export and fine-tuning see the usual model. The wasm steps give the same values and gradients as the
 * layers, up to the order of some sums' additions (test/unit/training-forward.test.ts).
 */
export function trainingForward(model: tf.LayersModel): (xs: tf.Tensor, sampleKey?: number) => tf.Tensor {
  const layers = chainOf(model);
  if (!layers) return (xs) => model.apply(xs, { training: true }) as tf.Tensor;
  const steps = planOf(layers);
  // Registration is idempotent and never undone: once seen, it is not looked up again.
  let registered = false;
  return (xs, sampleKey = 0) => {
    registered ||= [CONV_RELU_POOL_GRAD, BATCH_NORM_TRAIN_GRAD, CONV_BATCH_NORM_GRAD, DROPOUT].every((k) => tf.getKernel(k, 'wasm') !== undefined);
    const wasm = registered && convKernelsEnabled() && tf.getBackend() === 'wasm';
    let y = xs;
    steps.forEach((step, i) => {
      if (step.kind === 'layer' || (WASM_KINDS.has(step.kind) && !wasm)) {
        y = applyLayers(step.layers, y);
      } else if (step.kind === 'dropout') {
        y = dropout(y, step, sampleKey, wasm);
      } else if (step.kind === 'batch-norm') {
        y = batchNorm(step, y);
      } else if (step.kind === 'conv') {
        y = conv2d(step, y);
      } else if (step.kind === 'conv-batch-norm') {
        y = convThenBatchNorm(step, y, i > 0);
      } else {
        // The first step's input is the images: a constant. Frozen weights are constants too.
        const grads = { x: i > 0, weights: step.trainable() };
        y = convReluPool(y as tf.Tensor4D, step.kernel.read() as tf.Tensor4D, step.bias.read() as tf.Tensor1D, step.attrs, grads);
      }
    });
    return y;
  };
}

/** The layers in order, as tfjs-layers runs them in training (`layer.apply`, as the model's own executor calls it). */
function applyLayers(layers: readonly tf.layers.Layer[], x: tf.Tensor): tf.Tensor {
  return layers.reduce((y, layer) => layer.apply(y, { training: true }) as tf.Tensor, x);
}

/**
 * Inverted dropout with dropout.ts's per-sample masks; the mask is a constant of the step's gradient. On wasm with our
 * kernels the dropout kernel draws the same masks as it applies them (kernels/dropout.ts).
 */
function dropout(x: tf.Tensor, step: Extract<Step, { kind: 'dropout' }>, sampleKey: number, wasm: boolean): tf.Tensor {
  if (step.rate === 0) return x;
  if (wasm) return dropoutOp(x, { ...dropoutParams(step.rate, step.seed), firstKey: sampleKey });
  const samples = x.shape[0]!;
  const mask = dropoutMask(samples, samples > 0 ? x.size / samples : 0, step.rate, step.seed, sampleKey);
  return tf.mul(x, tf.tensor(mask, x.shape, 'float32'));
}

function conv2d(step: Extract<Step, { kind: 'conv' }>, x: tf.Tensor): tf.Tensor {
  return tf.conv2d(x as tf.Tensor4D, step.kernel.read() as tf.Tensor4D, step.strides, step.pad, 'NHWC', step.dilations);
}

/** Whether x has too few rows per channel for the batch-norm kernels (MIN_ROWS): the layers themselves run then. */
const tooFewRows = (x: tf.Tensor): boolean => x.size / x.shape[x.shape.length - 1]! < MIN_ROWS;

/** The rows per channel of the convolution's output (batch × OH × OW), as tfjs-core sizes it. */
function convOutputRows(x: tf.Tensor, step: Extract<Step, { kind: 'conv' }>): number {
  const info = tf.backend_util.computeConv2DInfo(x.shape as [number, number, number, number], step.kernel.shape as [number, number, number, number],
    step.strides, step.dilations, step.pad);
  return info.batchSize * info.outHeight * info.outWidth;
}

/** Updates the layer's moving mean and variance from the batch's, as tfjs-layers does. */
const movingAverages = (step: BatchNormPart) => (mean: tf.Tensor, variance: tf.Tensor): void => {
  movingAverage(step.bn.movingMean, mean, step.momentum);
  movingAverage(step.bn.movingVariance, variance, step.momentum);
};

/** A batch-norm step: one op, or the layers themselves for batches too small for it. */
function batchNorm(step: Extract<Step, { kind: 'batch-norm' }>, x: tf.Tensor): tf.Tensor {
  if (tooFewRows(x)) return applyLayers(step.layers, x);
  return batchNormTraining(x, step.bn.gamma.read(), step.bn.beta.read(), { epsilon: step.epsilon, relu: step.relu, pool: step.pool }, movingAverages(step));
}

/** A convolution and its batch norm: one op, or for batches too small for it the convolution, then the layers. */
function convThenBatchNorm(step: Extract<Step, { kind: 'conv-batch-norm' }>, x: tf.Tensor, inputGrad: boolean): tf.Tensor {
  const { conv } = step;
  if (convOutputRows(x, conv) < MIN_ROWS) return applyLayers(step.layers.slice(1), conv2d(conv, x));
  return convBatchNorm(
    x as tf.Tensor4D, conv.kernel.read() as tf.Tensor4D, step.bn.gamma.read() as tf.Tensor1D, step.bn.beta.read() as tf.Tensor1D,
    { strides: conv.strides, pad: conv.pad, varianceEpsilon: step.epsilon, relu: step.relu, pool: step.pool },
    { x: inputGrad, filter: step.trainable() }, movingAverages(step),
  );
}

/** How many steps of each kind other than 'layer' `trainingForward(model)` plans (test/unit/training-forward.test.ts). */
export function fusedSteps(model: tf.LayersModel): {
  convReluPool: number; conv: number; convBatchNorm: number; batchNorm: number; batchNormRelu: number; batchNormReluPool: number; dropout: number;
} {
  const steps = planOf(chainOf(model) ?? []);
  // A conv-batch-norm step counts once as convBatchNorm and once among the batch-norm kinds.
  const bn = steps.filter((s) => s.kind === 'batch-norm' || s.kind === 'conv-batch-norm') as BatchNormPart[];
  return {
    dropout: steps.filter((s) => s.kind === 'dropout').length,
    convReluPool: steps.filter((s) => s.kind === 'conv-relu-pool').length,
    conv: steps.filter((s) => s.kind === 'conv').length,
    convBatchNorm: steps.filter((s) => s.kind === 'conv-batch-norm').length,
    batchNorm: bn.filter((s) => !s.relu).length,
    batchNormRelu: bn.filter((s) => s.relu && !s.pool).length,
    batchNormReluPool: bn.filter((s) => s.pool).length,
  };
}
