import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/shared/core/backend.js';
import { gatherBatch, loadMnist } from '../../src/shared/data/mnist.js';
import { LocalReducer } from '../../src/shared/train/reducer.js';
import { Replica } from '../../src/shared/train/replica.js';
import { TrainStep } from '../../src/shared/train/step.js';

/**
 * A small CNN with every layer kind of the zoo's `cnn` plus the attributes the kernels must cover in training
 * (same and valid padding, a strided convolution), small enough for the cpu backend to train in seconds.
 */
function smallCnn(seed: number): tf.Sequential {
  const init = (i: number) => ({ kernelInitializer: tf.initializers.glorotUniform({ seed: seed * 10 + i }) });
  const m = tf.sequential({ name: 'small' });
  m.add(tf.layers.conv2d({ name: 'conv1', inputShape: [28, 28, 1], filters: 8, kernelSize: 3, padding: 'same', activation: 'relu', ...init(1) }));
  m.add(tf.layers.maxPooling2d({ name: 'pool1', poolSize: 2 }));
  m.add(tf.layers.conv2d({ name: 'conv2', filters: 12, kernelSize: 3, strides: 2, activation: 'relu', ...init(2) }));
  m.add(tf.layers.flatten({ name: 'flatten' }));
  m.add(tf.layers.dense({ name: 'head', units: 10, ...init(3) }));
  m.add(tf.layers.activation({ name: 'softmax', activation: 'softmax' }));
  return m;
}

/**
 * The steps are synchronous (the local reducer resolves at once), so a long loop would starve vitest's RPC with the
 * main process (the cpu-backend curve takes a minute on a loaded machine: "Timeout calling onTaskUpdate").
 */
const yieldToEventLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

async function lossCurve(backend: 'cpu' | 'wasm', steps: number): Promise<number[]> {
  await tf.setBackend(backend);
  const data = loadMnist();
  const replica = await Replica.create({ model: smallCnn(7), seed: 7, optimizer: { name: 'sgd', momentum: 0.9, weightDecay: 0 } });
  const step = new TrainStep(replica, new LocalReducer());
  const losses: number[] = [];
  for (let s = 0; s < steps; s++) {
    const ids = Array.from({ length: 32 }, (_, i) => (s * 32 + i) % 2000);
    losses.push((await step.run(gatherBatch(data.train.images, data.train.labels, ids), s, 0.05)).loss);
    await yieldToEventLoop();
  }
  return losses;
}

describe('training on the wasm backend', () => {
  beforeAll(async () => {
    await initBackend('wasm');
    await import('@tensorflow/tfjs-backend-cpu');
  });

  it('lowers the loss the way the cpu backend does, on the same data and seed (issue #2)', async () => {
    const wasm = await lossCurve('wasm', 30);
    const cpu = await lossCurve('cpu', 30);
    const mean = (v: number[]) => v.reduce((a, b) => a + b, 0) / v.length;
    expect(mean(wasm.slice(-5))).toBeLessThan(0.6 * mean(wasm.slice(0, 5)));
    expect(mean(cpu.slice(-5))).toBeLessThan(0.6 * mean(cpu.slice(0, 5)));
    // Same initial weights and batches: the first step agrees to float32 accuracy, and the trajectories stay close
    // (they drift only by accumulated summation-order differences).
    expect(Math.abs(wasm[0]! - cpu[0]!)).toBeLessThan(1e-5 * Math.abs(cpu[0]!) + 1e-6);
    wasm.forEach((l, i) => expect(Math.abs(l - cpu[i]!), `step ${i}`).toBeLessThan(0.02 * Math.abs(cpu[i]!) + 1e-3));
  });

  it('keeps tf.memory().numTensors flat over 100 training steps of cnn (issue #2)', async () => {
    await tf.setBackend('wasm');
    const data = loadMnist();
    const replica = await Replica.create({ model: 'cnn', seed: 3, optimizer: { name: 'adam', momentum: 0.9, weightDecay: 0 } });
    const step = new TrainStep(replica, new LocalReducer());
    const batch = (s: number) => gatherBatch(data.train.images, data.train.labels, Array.from({ length: 32 }, (_, i) => s * 32 + i));
    await step.run(batch(0), 0, 1e-3);
    const before = tf.memory().numTensors;
    const bytesBefore = tf.memory().numBytes;
    for (let s = 1; s <= 100; s++) {
      await step.run(batch(s), s, 1e-3);
      await yieldToEventLoop();
    }
    expect(tf.memory().numTensors).toBe(before);
    expect(tf.memory().numBytes).toBe(bytesBefore);
  });

  it('rewrites every slot of a reused all-reduce buffer longer than the layout: the contribution, then zeros to its end', async () => {
    await tf.setBackend('wasm');
    const replica = await Replica.create({ model: 'cnn', seed: 3, optimizer: { name: 'sgd', momentum: 0.9, weightDecay: 0 } });
    const { bufferLength, countIndex } = replica.layout;
    const size = 5;
    const batch = { x: Float32Array.from({ length: size * 784 }, (_, i) => (i % 97) / 97), y: Int32Array.from({ length: size }, (_, i) => i), size };
    // A multi-rank buffer ends with the ranks' health reports; the previous step's sums are still in it.
    const out = new Float32Array(bufferLength + 9).fill(Number.NaN);
    await replica.computeGradients(batch, out);
    expect(out.every((v) => Number.isFinite(v))).toBe(true);
    expect(out[countIndex]).toBe(size);
    expect([...out.subarray(countIndex + 1)]).toEqual(new Array<number>(9).fill(0));
  });

  it('refuses a non-finite gradient with NON_FINITE_GRADIENT naming the weight, and applies nothing', async () => {
    await tf.setBackend('wasm');
    const replica = await Replica.create({ model: 'cnn', seed: 3, optimizer: { name: 'sgd', momentum: 0.9, weightDecay: 0 } });
    const before = replica.params.slice();
    const digest = replica.digest();
    const reduced = new Float32Array(replica.layout.bufferLength);
    reduced[replica.layout.countIndex] = 4;
    reduced[replica.layout.trainable[2]!.offset + 5] = Number.NaN;
    expect(() => replica.applyReduced(reduced, 0.1, 7)).toThrowError(expect.objectContaining({ code: 'NON_FINITE_GRADIENT', message: expect.stringContaining(replica.layout.trainable[2]!.name) }));
    expect(replica.digest()).toBe(digest);
    expect(replica.params).toEqual(before);
    expect(replica.optimizer.state().step).toBe(0);
  });
});
