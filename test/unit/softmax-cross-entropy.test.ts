import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/shared/core/backend.js';
import { SOFTMAX_CROSS_ENTROPY, SOFTMAX_CROSS_ENTROPY_GRAD, softmaxCrossEntropySum } from '../../src/shared/kernels/softmax-cross-entropy.js';
import { randomFloats } from '../helpers/random.js';

// The training loss as one op on wasm (kernels/softmax-cross-entropy.ts): the summed loss and its gradient must be
// tfjs's losses.softmaxCrossEntropy(oneHot(labels), logits, SUM) as the cpu backend computes it, up to the order of
// the sums' additions, including logits far from 0 (log-sum-exp must not overflow).

const CASES: Array<{ name: string; rows: number; classes: number; spread: number }> = [
  { name: 'a batch of 64 over 10 classes', rows: 64, classes: 10, spread: 3 },
  { name: 'one sample', rows: 1, classes: 10, spread: 3 },
  { name: 'logits near ±80 (exp alone would overflow float32)', rows: 16, classes: 7, spread: 80 },
];

function logitsAndLabels(rows: number, classes: number, spread: number, seed: number) {
  const logits = randomFloats(rows * classes, seed).map((v) => v * spread);
  const labels = Int32Array.from({ length: rows }, (_, i) => (i * 7 + seed) % classes);
  return { logits, labels };
}

/** The loss and its gradient for the logits on the current backend: tfjs's losses on cpu, the op on wasm. */
function lossAndGrad(logits: Float32Array, labels: Int32Array, rows: number, classes: number) {
  return tf.tidy(() => {
    const y = tf.tensor1d(labels, 'int32');
    const { value, grads } = tf.valueAndGrads((z: tf.Tensor) => softmaxCrossEntropySum(z as tf.Tensor2D, y))([tf.tensor2d(logits, [rows, classes])]);
    return { loss: value.dataSync()[0]!, grad: grads[0]!.dataSync() as Float32Array };
  });
}

describe('softmaxCrossEntropySum (kernels/softmax-cross-entropy.ts)', () => {
  beforeAll(async () => {
    await initBackend('wasm');
  });

  for (const c of CASES) {
    it(`equals tfjs's summed softmax cross-entropy on cpu, value and gradient: ${c.name}`, async () => {
      const { logits, labels } = logitsAndLabels(c.rows, c.classes, c.spread, 5);
      await tf.setBackend('cpu');
      const want = lossAndGrad(logits, labels, c.rows, c.classes);
      await tf.setBackend('wasm');
      const before = tf.memory().numTensors;
      const got = lossAndGrad(logits, labels, c.rows, c.classes);
      // On wasm with mnist-ddp's kernels the op runs as its two kernels, not tfjs's chain.
      const { kernelNames } = await tf.profile(() => void lossAndGrad(logits, labels, c.rows, c.classes));
      expect(kernelNames).toEqual(expect.arrayContaining([SOFTMAX_CROSS_ENTROPY, SOFTMAX_CROSS_ENTROPY_GRAD]));
      expect(kernelNames).not.toContain('OneHot');
      expect(tf.memory().numTensors).toBe(before);
      expect(Number.isFinite(want.loss)).toBe(true);
      expect(Math.abs(got.loss - want.loss)).toBeLessThanOrEqual(1e-5 * Math.abs(want.loss));
      const scale = Math.max(...want.grad.map(Math.abs));
      expect(Math.max(...got.grad.map((g, i) => Math.abs(g - want.grad[i]!)))).toBeLessThanOrEqual(1e-6 * scale);
      // Each row's gradient is softmax − onehot: it sums to 0.
      for (let b = 0; b < c.rows; b++) expect(Math.abs(got.grad.slice(b * c.classes, (b + 1) * c.classes).reduce((s, g) => s + g, 0))).toBeLessThan(1e-5);
    });
  }

  it('checks its inputs as a stock kernel does: logits [B, K] float32, labels int32 [B] inside [0, K), dy a scalar', () => {
    const forward = (logits: tf.Tensor, labels: tf.Tensor) => () => tf.tidy(() => tf.engine().runKernel(SOFTMAX_CROSS_ENTROPY, { logits, labels }));
    const grad = (dy: tf.Tensor, logits: tf.Tensor, labels: tf.Tensor) => () => tf.tidy(() => tf.engine().runKernel(SOFTMAX_CROSS_ENTROPY_GRAD, { dy, logits, labels }));
    const z = tf.zeros([2, 3]);
    const y = tf.tensor1d([0, 2], 'int32');
    expect(forward(z, y)).not.toThrow();
    expect(grad(tf.scalar(1), z, y)).not.toThrow();
    expect(forward(tf.zeros([2, 3, 1]), y)).toThrow(/logits must be \[batch, classes\]/);
    expect(forward(tf.zeros([2, 3], 'int32'), y)).toThrow(/float32/);
    expect(forward(z, tf.tensor1d([0, 2], 'float32'))).toThrow(/labels must be int32 \[2\]/);
    expect(forward(z, tf.tensor1d([0, 1, 2], 'int32'))).toThrow(/labels must be int32 \[2\]/);
    expect(forward(z, tf.tensor1d([0, 3], 'int32'))).toThrow(/label 3 of sample 1 is outside \[0, 3\)/);
    expect(forward(z, tf.tensor1d([-1, 0], 'int32'))).toThrow(/label -1 of sample 0/);
    expect(grad(tf.ones([1]), z, y)).toThrow(/dy must be a scalar/);
    expect(grad(tf.scalar(1), z, tf.tensor1d([5, 0], 'int32'))).toThrow(/label 5 of sample 0/);
    tf.dispose([z, y]);
  });
});
