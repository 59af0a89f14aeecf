import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/shared/core/backend.js';
import { buildModel, logitsModel } from '../../src/shared/model/zoo.js';
import { fusedSteps, trainingForward } from '../../src/shared/train/training-forward.js';
import { relError } from '../helpers/conv-reference.js';
import { randomFloats } from '../helpers/random.js';

// Issue #17: on wasm the training step runs some groups of layers as one op (train/training-forward.ts). The loss,
// every gradient and the batch-norm moving statistics must equal tfjs-layers' own layers within 1e-4 relative, and no
// tensor may leak. Dropout is trainingForward's own on every backend (train/dropout.ts): drawn per sample key.

describe('trainingForward (train/training-forward.ts)', () => {
  beforeAll(async () => {
    await initBackend('wasm');
  });

  it('fuses the conv blocks the op takes: both of cnn, the second of lenet (the first has 6 filters), none elsewhere', () => {
    const count = (name: string) => fusedSteps(logitsModel(buildModel(name, { seed: 1 }))).convReluPool;
    expect([count('cnn'), count('lenet'), count('mlp'), count('cnn-large')]).toEqual([2, 1, 0, 0]);
  });

  it("runs every BatchNormalization → ReLU of cnn-large as one op, with the bias-free convolution before it where there is one, and nothing else of the zoo", () => {
    const steps = (name: string) => fusedSteps(logitsModel(buildModel(name, { seed: 1 })));
    expect(steps('cnn-large')).toEqual({ convReluPool: 0, conv: 0, convBatchNorm: 4, batchNorm: 0, batchNormRelu: 3, batchNormReluPool: 2, dropout: 3 });
    expect([steps('cnn'), steps('lenet'), steps('mlp')].map((s) => s.batchNorm + s.batchNormRelu + s.batchNormReluPool + s.conv + s.convBatchNorm + s.dropout)).toEqual([0, 0, 0]);
  });

  /**
   * One differentiated pass of `name` (seed 3) on `backend`: [loss, every gradient, every moving statistic after it],
   * through trainingForward at `sampleKey` or through tfjs-layers' model.apply.
   */
  async function pass(name: string, backend: 'wasm' | 'cpu', via: 'trainingForward' | 'model.apply', B: number, sampleKey = 0) {
    await tf.setBackend(backend);
    const model = buildModel(name, { seed: 3 });
    const logits = logitsModel(model);
    const forward = trainingForward(logits);
    const f = via === 'trainingForward' ? (x: tf.Tensor) => forward(x, sampleKey) : (x: tf.Tensor) => logits.apply(x, { training: true }) as tf.Tensor;
    const xs = tf.tensor4d(randomFloats(B * 784, 6, 0, 1), [B, 28, 28, 1]);
    const labels = tf.oneHot(tf.tensor1d(Array.from({ length: B }, (_, i) => i % 10), 'int32'), 10);
    const vars = model.trainableWeights.map((w) => w.read() as tf.Variable);
    const moving = model.weights.filter((w) => !w.trainable);
    const before = tf.memory().numTensors;
    const out = tf.tidy(() => {
      const { value, grads } = tf.variableGrads(() => tf.losses.softmaxCrossEntropy(labels, f(xs) as tf.Tensor2D) as tf.Scalar, vars);
      return {
        loss: value.dataSync()[0]!,
        grads: vars.map((v) => [v.name, grads[v.name]!.dataSync() as Float32Array] as const),
        moving: moving.map((w) => [w.originalName, w.read().dataSync() as Float32Array] as const),
      };
    });
    const leaked = tf.memory().numTensors - before;
    tf.dispose([xs, labels]);
    model.dispose();
    await tf.setBackend('wasm');
    return { ...out, leaked };
  }

  function expectSame(got: Awaited<ReturnType<typeof pass>>, want: Awaited<ReturnType<typeof pass>>): void {
    expect(Math.abs(got.loss - want.loss) / Math.abs(want.loss)).toBeLessThan(1e-5);
    got.grads.forEach(([name, g], i) => expect(relError(g, want.grads[i]![1]), name).toBeLessThan(1e-4));
    got.moving.forEach(([name, m], i) => expect(relError(m, want.moving[i]![1]), name).toBeLessThan(1e-5));
  }

  describe.each([['cnn'], ['lenet']] as const)('%s (no dropout)', (name) => {
    it('gives the loss and the gradients of model.apply, and leaks no tensor', async () => {
      const want = await pass(name, 'wasm', 'model.apply', 8);
      const got = await pass(name, 'wasm', 'trainingForward', 8);
      expect(got.leaked).toBe(0);
      expectSame(got, want);
    });
  });

  // cnn-large's dropout is trainingForward's own on every backend; on cpu its other layers run as tfjs-layers runs them.
  describe.each([[4], [3]] as const)('cnn-large, batch %i (batch norm: one op from 4 rows per channel)', (B) => {
    it('gives on wasm the loss, gradients and moving statistics of the layers on cpu, and leaks no tensor', async () => {
      const want = await pass('cnn-large', 'cpu', 'trainingForward', B, 17);
      const got = await pass('cnn-large', 'wasm', 'trainingForward', B, 17);
      expect(got.leaked).toBe(0);
      expectSame(got, want);
      // Moving means start at 0 and variances at 1: the pass moved every one of them.
      expect(got.moving.every(([, m]) => m.every((v) => v !== 0 && v !== 1)), 'moving statistics were updated').toBe(true);
    });
  });

  it("draws cnn-large's dropout per sample key: another key, another loss; the same key, the same loss", async () => {
    const [a, b, again] = [await pass('cnn-large', 'wasm', 'trainingForward', 4, 0), await pass('cnn-large', 'wasm', 'trainingForward', 4, 4),
      await pass('cnn-large', 'wasm', 'trainingForward', 4, 0)];
    expect(b.loss).not.toBe(a.loss);
    expect(again.loss).toBe(a.loss);
    expect(again.grads.map(([, g]) => [...g])).toEqual(a.grads.map(([, g]) => [...g]));
  });

  it('leaves a frozen conv layer\'s weights out and still matches model.apply for the rest', () => {
    const model = buildModel('cnn', { seed: 4 });
    model.getLayer('conv1').trainable = false;
    const logits = logitsModel(model);
    const forward = trainingForward(logits);
    const xs = tf.tensor4d(randomFloats(4 * 784, 7, 0, 1), [4, 28, 28, 1]);
    const labels = tf.oneHot(tf.tensor1d([1, 2, 3, 4], 'int32'), 10);
    const vars = model.trainableWeights.map((w) => w.read() as tf.Variable);
    expect(vars.map((v) => v.name).some((n) => n.includes('conv1'))).toBe(false);
    const grads = (f: (x: tf.Tensor) => tf.Tensor) => tf.tidy(() => {
      const { grads: g } = tf.variableGrads(() => tf.losses.softmaxCrossEntropy(labels, f(xs) as tf.Tensor2D) as tf.Scalar, vars);
      return vars.map((v) => g[v.name]!.dataSync() as Float32Array);
    });
    const want = grads((x) => logits.apply(x, { training: true }) as tf.Tensor);
    const got = grads(forward);
    vars.forEach((v, i) => expect(relError(got[i]!, want[i]!), v.name).toBeLessThan(1e-4));
    tf.dispose([xs, labels]);
  });
});
