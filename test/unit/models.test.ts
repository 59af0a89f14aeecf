import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/shared/core/backend.js';
import { isMnistDdpError } from '../../src/shared/core/errors.js';
import { buildModel, logitsModel, MODEL_NAMES, type ModelName } from '../../src/shared/model/zoo.js';
import { parameterCount } from '../helpers/parameter-count.js';

/*
 * Parameter counts worked out from the architectures in src/shared/model/zoo.ts (kernel + bias; batch norm has
 * gamma, beta, moving mean, moving variance, the last two non-trainable):
 *
 * mlp       flatten 784 → fc1 784·128+128 = 100 480 → head 128·10+10 = 1 290                       = 101 770
 * lenet     conv1 5·5·1·6+6 = 156 (same, 28×28×6) → pool 14×14×6 → conv2 5·5·6·16+16 = 2 416 (valid, 10×10×16)
 *           → pool 5×5×16 = 400 → fc1 400·120+120 = 48 120 → fc2 120·84+84 = 10 164 → head 84·10+10 = 850 = 61 706
 * cnn       conv1 3·3·1·32+32 = 320 (26×26×32) → pool 13×13×32 → conv2 3·3·32·64+64 = 18 496 (11×11×64)
 *           → pool 5×5×64 = 1 600 → head 1 600·10+10 = 16 010                                          = 34 826
 * cnn-large conv1a 3·3·1·32 = 288, bn1a 4·32 = 128, conv1b 3·3·32·32 = 9 216, bn1b 128 → pool 14×14×32;
 *           conv2a 3·3·32·64 = 18 432, bn2a 256, conv2b 3·3·64·64 = 36 864, bn2b 256 → pool 7×7×64 = 3 136;
 *           fc1 3 136·128 = 401 408, bnfc1 4·128 = 512; head 128·10+10 = 1 290                        = 468 778
 *           of which moving statistics 2·(32+32+64+64+128) = 640 are non-trainable                      → 468 138
 */
const EXPECTED: Record<ModelName, { total: number; trainable: number; layers: string[] }> = {
  mlp: { total: 101_770, trainable: 101_770, layers: ['flatten', 'fc1', 'head', 'softmax'] },
  lenet: { total: 61_706, trainable: 61_706, layers: ['conv1', 'pool1', 'conv2', 'pool2', 'flatten', 'fc1', 'fc2', 'head', 'softmax'] },
  cnn: { total: 34_826, trainable: 34_826, layers: ['conv1', 'pool1', 'conv2', 'pool2', 'flatten', 'head', 'softmax'] },
  'cnn-large': {
    total: 468_778,
    trainable: 468_138,
    layers: [
      'conv1a', 'bn1a', 'relu1a', 'conv1b', 'bn1b', 'relu1b', 'pool1', 'drop1',
      'conv2a', 'bn2a', 'relu2a', 'conv2b', 'bn2b', 'relu2b', 'pool2', 'drop2',
      'flatten', 'fc1', 'bnfc1', 'relufc1', 'dropfc1', 'head', 'softmax',
    ],
  },
};

const count = (weights: tf.LayerVariable[]): number => weights.reduce((n, w) => n + w.shape.reduce<number>((a, b) => a * (b ?? 1), 1), 0);

beforeAll(async () => {
  await initBackend('wasm');
});

describe('model zoo', () => {
  it('lists exactly the four models', () => {
    expect([...MODEL_NAMES]).toEqual(['mlp', 'lenet', 'cnn', 'cnn-large']);
  });

  for (const name of MODEL_NAMES) {
    describe(name, () => {
      it('maps a [2, 28, 28, 1] batch to [2, 10] class probabilities', () => {
        const model = buildModel(name, { seed: 5 });
        const x = tf.randomUniform([2, 28, 28, 1], -0.5, 2.8, 'float32', 11);
        const y = model.predict(x) as tf.Tensor;
        expect(y.shape).toEqual([2, 10]);
        const p = y.arraySync() as number[][];
        for (const row of p) {
          for (const v of row) expect(v).toBeGreaterThanOrEqual(0);
          expect(row.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 5);
        }
        // Not a constant: the two inputs differ, so do their probabilities.
        expect(p[0]).not.toEqual(p[1]);
        tf.dispose([x, y]);
        model.dispose();
      });

      it(`has ${EXPECTED[name].total} parameters (${EXPECTED[name].trainable} trainable)`, () => {
        const model = buildModel(name, { seed: 1 });
        expect(parameterCount(model)).toBe(EXPECTED[name].total);
        expect(count(model.trainableWeights)).toBe(EXPECTED[name].trainable);
        expect(model.countParams()).toBe(EXPECTED[name].total);
        model.dispose();
      });

      it('has stable layer names ending in head → softmax, and a logits view at head', () => {
        const model = buildModel(name, { seed: 1 });
        expect(model.name).toBe(name);
        expect(model.layers.map((l) => l.name)).toEqual(EXPECTED[name].layers);
        expect(model.getLayer('head').getConfig()).toMatchObject({ units: 10 });
        expect(model.getLayer('softmax').getConfig()).toMatchObject({ activation: 'softmax' });
        const logits = logitsModel(model);
        expect(logits.outputs[0]!.shape).toEqual([null, 10]);
        model.dispose();
      });

      it('initialises deterministically from the seed', () => {
        const [a, b, c] = [buildModel(name, { seed: 3 }), buildModel(name, { seed: 3 }), buildModel(name, { seed: 4 })];
        const head = (m: tf.LayersModel): Float32Array => m.getLayer('head').getWeights()[0]!.dataSync() as Float32Array;
        expect(head(a)).toEqual(head(b));
        expect(head(a)).not.toEqual(head(c));
        [a, b, c].forEach((m) => m.dispose());
      });
    });
  }

  it('the logits view of cnn, softmaxed, equals the model output', () => {
    const model = buildModel('cnn', { seed: 2 });
    const x = tf.randomNormal([3, 28, 28, 1], 0, 1, 'float32', 4);
    const [p, l] = [model.predict(x) as tf.Tensor, logitsModel(model).predict(x) as tf.Tensor];
    const diff = tf.tidy(() => tf.max(tf.abs(tf.sub(tf.softmax(l), p))).dataSync()[0]!);
    expect(diff).toBeLessThan(1e-6);
    tf.dispose([x, p, l]);
    model.dispose();
  });

  it('numClasses changes only the head', () => {
    const model = buildModel('cnn', { seed: 1, numClasses: 5 });
    expect((model.predict(tf.zeros([1, 28, 28, 1])) as tf.Tensor).shape).toEqual([1, 5]);
    expect(parameterCount(model)).toBe(34_826 - 16_010 + (1600 * 5 + 5));
    model.dispose();
  });

  it("rejects 'resnet' with MODEL_UNKNOWN listing the valid names", () => {
    let caught: unknown;
    try {
      buildModel('resnet', { seed: 1 });
    } catch (err) {
      caught = err;
    }
    expect(isMnistDdpError(caught, 'MODEL_UNKNOWN')).toBe(true);
    const err = caught as Error & { details: Record<string, unknown> };
    expect(err.message).toContain("'resnet'");
    for (const name of MODEL_NAMES) expect(err.message).toContain(name);
    expect(err.details).toEqual({ model: 'resnet' });
  });
});
