import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/shared/core/backend.js';
import { buildModel, logitsModel } from '../../src/shared/model/zoo.js';
import { fusedSteps, trainingForward } from '../../src/shared/train/training-forward.js';
import { relError } from '../helpers/conv-reference.js';
import { randomFloats } from '../helpers/random.js';

// Issue #17: on wasm the training step runs some groups of layers as one op (train/training-forward.ts). The loss,
// every gradient and the batch-norm moving statistics must equal tfjs-layers' own model.apply within 1e-4 relative,
// and tf.memory() must stay flat.

describe('trainingForward (train/training-forward.ts)', () => {
  beforeAll(async () => {
    await initBackend('wasm');
  });

  it('fuses the conv blocks the op takes: both of cnn, the second of lenet (the first has 6 filters), none elsewhere', () => {
    const count = (name: string) => fusedSteps(logitsModel(buildModel(name, { seed: 1 }))).convReluPool;
    expect([count('cnn'), count('lenet'), count('mlp'), count('cnn-large')]).toEqual([2, 1, 0, 0]);
  });

  it("runs every BatchNormalization → ReLU of cnn-large as one op and its bias-free convolutions as conv2d, and nothing else of the zoo", () => {
    const steps = (name: string) => fusedSteps(logitsModel(buildModel(name, { seed: 1 })));
    expect(steps('cnn-large')).toEqual({ convReluPool: 0, conv: 4, batchNorm: 0, batchNormRelu: 5 });
    expect([steps('cnn'), steps('lenet'), steps('mlp')].map((s) => s.batchNorm + s.batchNormRelu + s.conv)).toEqual([0, 0, 0]);
  });

  // The models with fused steps; mlp runs model.apply itself. cnn-large's dropout layers are seeded: the same masks
  // at every call.
  describe.each([['cnn', 8], ['lenet', 8], ['cnn-large', 8], ['cnn-large', 3]] as const)('%s, batch %i', (name, B) => {
    it('gives the loss, the gradients and the moving statistics of model.apply, and tf.memory() stays flat', () => {
      const model = buildModel(name, { seed: 3 });
      const logits = logitsModel(model);
      const forward = trainingForward(logits);
      const xs = tf.tensor4d(randomFloats(B * 784, 6, 0, 1), [B, 28, 28, 1]);
      const labels = tf.oneHot(tf.tensor1d(Array.from({ length: B }, (_, i) => i % 10), 'int32'), 10);
      const vars = model.trainableWeights.map((w) => w.read() as tf.Variable);
      const moving = model.weights.filter((w) => !w.trainable);
      const initial = moving.map((w) => w.read().clone());
      // Each run starts from the same moving statistics and returns them as it left them.
      const run = (f: (x: tf.Tensor) => tf.Tensor) => tf.tidy(() => {
        moving.forEach((w, i) => w.write(initial[i]!));
        const { value, grads } = tf.variableGrads(() => tf.losses.softmaxCrossEntropy(labels, f(xs) as tf.Tensor2D) as tf.Scalar, vars);
        return [value.dataSync()[0]!, ...vars.map((v) => grads[v.name]!.dataSync() as Float32Array), ...moving.map((w) => w.read().dataSync() as Float32Array)] as const;
      });
      const plainForward = (x: tf.Tensor) => logits.apply(x, { training: true }) as tf.Tensor;
      const want = run(plainForward);
      const before = tf.memory().numTensors;
      const got = run(forward);
      run(forward);
      expect(tf.memory().numTensors).toBe(before);
      expect(Math.abs(got[0] - want[0]) / Math.abs(want[0])).toBeLessThan(1e-5);
      vars.forEach((v, i) => expect(relError(got[i + 1] as Float32Array, want[i + 1] as Float32Array), v.name).toBeLessThan(1e-4));
      moving.forEach((w, i) => {
        const [g, want0] = [got[vars.length + 1 + i] as Float32Array, want[vars.length + 1 + i] as Float32Array];
        expect(relError(g, want0), w.originalName).toBeLessThan(1e-5);
        expect([...want0], `${w.originalName} was updated`).not.toEqual([...(initial[i]!.dataSync() as Float32Array)]);
      });
      tf.dispose([xs, labels, ...initial]);
    });
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
