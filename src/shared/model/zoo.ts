import * as tf from '@tensorflow/tfjs';
import { MnistDdpError } from '../core/errors.js';

/**
 * The model zoo. Every model maps a [B, 28, 28, 1] image batch to class probabilities through a linear layer
 * named `head` followed by a `softmax` activation layer: training reads the logits at `head` (numerically stable
 * cross-entropy), exported models still output probabilities. Layer names are stable: fine-tuning freezes by name.
 */
export const MODEL_NAMES = ['mlp', 'lenet', 'cnn', 'cnn-large'] as const;
export type ModelName = (typeof MODEL_NAMES)[number];

export const INPUT_SHAPE: [number, number, number] = [28, 28, 1];

export interface ModelOptions {
  seed: number;
  numClasses?: number;
}

type Init = { kernelInitializer: ReturnType<typeof tf.initializers.glorotUniform> };

function initFor(seed: number): (layerIndex: number) => Init {
  return (layerIndex) => ({ kernelInitializer: tf.initializers.glorotUniform({ seed: seed * 1000 + layerIndex }) });
}

function addHead(model: tf.Sequential, numClasses: number, init: Init): void {
  model.add(tf.layers.dense({ name: 'head', units: numClasses, ...init }));
  model.add(tf.layers.activation({ name: 'softmax', activation: 'softmax' }));
}

function mlp({ seed, numClasses = 10 }: ModelOptions): tf.Sequential {
  const init = initFor(seed);
  const m = tf.sequential({ name: 'mlp' });
  m.add(tf.layers.flatten({ name: 'flatten', inputShape: INPUT_SHAPE }));
  m.add(tf.layers.dense({ name: 'fc1', units: 128, activation: 'relu', ...init(1) }));
  addHead(m, numClasses, init(2));
  return m;
}

function lenet({ seed, numClasses = 10 }: ModelOptions): tf.Sequential {
  const init = initFor(seed);
  const m = tf.sequential({ name: 'lenet' });
  m.add(tf.layers.conv2d({ name: 'conv1', inputShape: INPUT_SHAPE, filters: 6, kernelSize: 5, padding: 'same', activation: 'relu', ...init(1) }));
  m.add(tf.layers.maxPooling2d({ name: 'pool1', poolSize: 2 }));
  m.add(tf.layers.conv2d({ name: 'conv2', filters: 16, kernelSize: 5, activation: 'relu', ...init(2) }));
  m.add(tf.layers.maxPooling2d({ name: 'pool2', poolSize: 2 }));
  m.add(tf.layers.flatten({ name: 'flatten' }));
  m.add(tf.layers.dense({ name: 'fc1', units: 120, activation: 'relu', ...init(3) }));
  m.add(tf.layers.dense({ name: 'fc2', units: 84, activation: 'relu', ...init(4) }));
  addHead(m, numClasses, init(5));
  return m;
}

/** The reference model of the benchmarks: 34 826 parameters. */
function cnn({ seed, numClasses = 10 }: ModelOptions): tf.Sequential {
  const init = initFor(seed);
  const m = tf.sequential({ name: 'cnn' });
  m.add(tf.layers.conv2d({ name: 'conv1', inputShape: INPUT_SHAPE, filters: 32, kernelSize: 3, activation: 'relu', ...init(1) }));
  m.add(tf.layers.maxPooling2d({ name: 'pool1', poolSize: 2 }));
  m.add(tf.layers.conv2d({ name: 'conv2', filters: 64, kernelSize: 3, activation: 'relu', ...init(2) }));
  m.add(tf.layers.maxPooling2d({ name: 'pool2', poolSize: 2 }));
  m.add(tf.layers.flatten({ name: 'flatten' }));
  addHead(m, numClasses, init(3));
  return m;
}

/** Two conv blocks with batch norm and dropout; with augmentation it reaches >= 99.5 % test accuracy. */
function cnnLarge({ seed, numClasses = 10 }: ModelOptions): tf.Sequential {
  const init = initFor(seed);
  const m = tf.sequential({ name: 'cnn-large' });
  const block = (prefix: string, filters: number, first: boolean, index: number): void => {
    for (const [suffix, offset] of [['a', 0], ['b', 1]] as const) {
      m.add(tf.layers.conv2d({
        name: `conv${prefix}${suffix}`, filters, kernelSize: 3, padding: 'same', useBias: false,
        ...(first && suffix === 'a' ? { inputShape: INPUT_SHAPE } : {}), ...init(index + offset),
      }));
      m.add(tf.layers.batchNormalization({ name: `bn${prefix}${suffix}` }));
      m.add(tf.layers.activation({ name: `relu${prefix}${suffix}`, activation: 'relu' }));
    }
    m.add(tf.layers.maxPooling2d({ name: `pool${prefix}`, poolSize: 2 }));
    m.add(tf.layers.dropout({ name: `drop${prefix}`, rate: 0.25, seed: seed + index }));
  };
  block('1', 32, true, 1);
  block('2', 64, false, 3);
  m.add(tf.layers.flatten({ name: 'flatten' }));
  m.add(tf.layers.dense({ name: 'fc1', units: 128, useBias: false, ...init(5) }));
  m.add(tf.layers.batchNormalization({ name: 'bnfc1' }));
  m.add(tf.layers.activation({ name: 'relufc1', activation: 'relu' }));
  m.add(tf.layers.dropout({ name: 'dropfc1', rate: 0.4, seed: seed + 6 }));
  addHead(m, numClasses, init(7));
  return m;
}

const BUILDERS: Record<ModelName, (o: ModelOptions) => tf.Sequential> = { mlp, lenet, cnn, 'cnn-large': cnnLarge };

export function isModelName(name: string): name is ModelName {
  return (MODEL_NAMES as readonly string[]).includes(name);
}

export function buildModel(name: string, options: ModelOptions): tf.Sequential {
  if (!isModelName(name)) {
    throw new MnistDdpError('MODEL_UNKNOWN', `unknown model '${name}'; choose one of: ${MODEL_NAMES.join(', ')}`, { model: name });
  }
  return BUILDERS[name](options);
}

/** The logits view of a zoo model: same layers and weights, output taken at `head`. */
export function logitsModel(model: tf.LayersModel): tf.LayersModel {
  return tf.model({ inputs: model.inputs, outputs: model.getLayer('head').output as tf.SymbolicTensor, name: `${model.name}-logits` });
}
