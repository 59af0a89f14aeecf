import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/shared/core/backend.js';
import { gatherBatch, loadMnist } from '../../src/shared/data/mnist.js';
import { rankSlice } from '../../src/shared/data/shard-plan.js';
import type { RingAllReducer } from '../../src/worker/ring/ring-allreduce.js';
import { Replica } from '../../src/shared/train/replica.js';
import { relError } from '../helpers/conv-reference.js';
import { connectRing } from '../helpers/ring.js';

// Issue #4: the N-worker gradient equals the single-process gradient over the same global batch (relative error
// <= 1e-5), with uneven splits weighted by sample count; over real ZeroMQ sockets.

const reducers: RingAllReducer[] = [];
afterEach(async () => {
  await Promise.all(reducers.splice(0).map((r) => r.close()));
});

function replica(): Promise<Replica> {
  return Replica.create({ model: 'cnn', seed: 5, optimizer: { name: 'sgd', momentum: 0.9, weightDecay: 0 } });
}

describe('data-parallel gradient', () => {
  beforeAll(async () => {
    await initBackend('wasm');
  });

  it.each([
    // Shards of 50/51, 33/33/34 and 17/17/18/18 samples: every case splits unevenly.
    { worldSize: 2, transport: 'tcp', samples: 101 },
    { worldSize: 3, transport: 'tcp', samples: 100 },
    { worldSize: 4, transport: 'ipc', samples: 70 },
  ] as const)('$worldSize ranks over $transport, $samples samples (uneven shards) match one process', async ({ worldSize, transport, samples }) => {
    const data = loadMnist();
    const ids = Array.from({ length: samples }, (_, i) => 1000 + i * 7);
    const single = await replica();
    const expected = new Float32Array(single.layout.bufferLength);
    await single.computeGradients(gatherBatch(data.train.images, data.train.labels, ids), expected);
    const count = expected[single.layout.countIndex]!;
    const expectedGrad = expected.subarray(0, single.layout.paramCount).map((v) => v / count);

    const ring = await connectRing(transport, worldSize, reducers);
    const buffers = await Promise.all(ring.map(async (_, rank) => {
      const [start, end] = rankSlice(0, samples, rank, worldSize);
      const buf = new Float32Array(single.layout.bufferLength);
      await (await replica()).computeGradients(gatherBatch(data.train.images, data.train.labels, ids.slice(start, end)), buf);
      return buf;
    }));
    const sizes = buffers.map((buf) => buf[single.layout.countIndex]);
    expect(new Set(sizes).size, `shard sizes ${sizes.join(', ')}`).toBeGreaterThan(1);
    const reduced = await Promise.all(ring.map((r, rank) => r.allReduce(buffers[rank]!, 0)));
    for (const buf of reduced) {
      expect(buf[single.layout.countIndex]).toBe(samples);
      const grad = buf.subarray(0, single.layout.paramCount).map((v) => v / samples);
      expect(relError(grad, expectedGrad)).toBeLessThan(1e-5);
      expect(Math.abs(buf[single.layout.lossIndex]! - expected[single.layout.lossIndex]!) / expected[single.layout.lossIndex]!).toBeLessThan(1e-5);
    }
    // Every rank holds the bit-identical sum, so replicas that apply it stay identical.
    for (const buf of reduced.slice(1)) expect(Buffer.compare(Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength), Buffer.from(reduced[0]!.buffer, reduced[0]!.byteOffset, reduced[0]!.byteLength))).toBe(0);
  });
});
