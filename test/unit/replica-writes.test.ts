import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { Replica } from '../../src/shared/train/replica.js';

// tfjs keeps the typed array a tensor is made from (cpu holds it, webgpu uploads it when first read). The replica
// writes its variables from buffers it reuses every step (the all-reduce buffer, the optimiser's parameters): the
// variables must hold copies. On webgpu a view made the batch-norm moving statistics collapse (H200, cnn-large
// 86 % test accuracy).

const optimizer = { name: 'sgd' as const, momentum: 0.9, weightDecay: 0 };

describe('Replica writes its variables from copies', () => {
  beforeAll(async () => {
    await tf.setBackend('cpu');
  });

  it('synced buffers (batch-norm moving statistics) and parameters keep their values when the sources are reused', async () => {
    const replica = await Replica.create({ model: 'cnn-large', seed: 1, optimizer });
    const { paramCount, lossIndex } = replica.layout;
    const synced = new Float32Array(lossIndex - paramCount).map((_, i) => 1 + (i % 7) / 8);
    const params = Float32Array.from(replica.params);
    replica.writeParams(synced);
    synced.fill(0); // the next step reuses the buffer
    replica.params.fill(0); // the optimiser updates in place
    const weights = await replica.allWeights();
    const byName = new Map<string, number>();
    let offset = 0;
    for (const w of replica.model.weights) {
      byName.set(w.originalName, offset);
      offset += w.shape.reduce<number>((a, b) => a * (b ?? 1), 1);
    }
    const first = replica.layout.synced[0]!;
    expect(first.name).toMatch(/moving_(mean|variance)/);
    const at = byName.get(first.name)!;
    expect(Array.from(weights.subarray(at, at + 8))).toEqual(Array.from({ length: 8 }, (_, i) => 1 + (i % 7) / 8));
    const kernel = replica.layout.trainable[0]!;
    const kAt = byName.get(kernel.name)!;
    expect(Array.from(weights.subarray(kAt, kAt + kernel.size))).toEqual(Array.from(params.subarray(kernel.offset, kernel.offset + kernel.size)));
    replica.model.dispose();
  });

  it('setAllWeights keeps its values when the source is reused', async () => {
    const replica = await Replica.create({ model: 'mlp', seed: 2, optimizer });
    const source = (await replica.allWeights()).map((_, i) => (i % 13) / 16);
    const expected = Float32Array.from(source);
    replica.setAllWeights(source);
    source.fill(-1);
    expect(await replica.allWeights()).toEqual(expected);
    replica.model.dispose();
  });
});
