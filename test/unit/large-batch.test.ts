import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/shared/core/backend.js';
import { trainConfigSchema } from '../../src/shared/core/config.js';
import { planDataset } from '../../src/shared/data/dataset-plan.js';
import { gatherBatch, IMAGE_PIXELS, loadMnist, type Batch } from '../../src/shared/data/mnist.js';
import { learningRate } from '../../src/shared/train/lr-schedule.js';
import { passSizes, UNSPLIT_SAMPLES } from '../../src/shared/train/pass-limit.js';
import { LocalReducer } from '../../src/shared/train/reducer.js';
import { Replica } from '../../src/shared/train/replica.js';
import { WorkerCore } from '../../src/shared/train/worker-core.js';

// GPU-sized batches (issue #13 item 4): a worker's batch of 1024 trains on wasm with mnist-ddp's kernels, and a
// batch too big for one wasm pass is computed in passes (shared/train/pass-limit.ts) with the arithmetic of ranks.

const optimizer = { name: 'sgd' as const, momentum: 0.9, weightDecay: 0 };
const range = (n: number, from = 0): number[] => Array.from({ length: n }, (_, i) => from + i);
/** The steps resolve synchronously: let vitest's RPC through between them (see training-step.test.ts). */
const yieldToEventLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe('batches of 1024 per worker on wasm', () => {
  beforeAll(async () => {
    await initBackend('wasm');
  });

  it('trains cnn at B=1024 with augmentation and linearly scaled, warmed-up lr: finite gradients, falling loss', async () => {
    // lr 1/80 is meant for a global batch of 256: 1/20 at 1024, reached after 2 warm-up steps. (The default
    // 0.05 at 64 scales to 0.8 here, which makes the first steps of cnn diverge without a warm-up of epochs.)
    const config = trainConfigSchema.parse({
      batchSize: 1024, augment: true, lr: 0.0125, lrScaling: 'linear', lrReferenceBatch: 256, schedule: 'constant', warmupSteps: 2, validationSize: 0, seed: 5,
    });
    const plan = planDataset(config);
    const replica = await Replica.create({ model: 'cnn', seed: 5, optimizer });
    const core = new WorkerCore(replica, plan, { seed: 5, batchSize: 1024, augment: true }, new LocalReducer());
    const losses: number[] = [];
    const lrs: number[] = [];
    for (let step = 0; step < 8; step++) {
      const lr = learningRate(config, 0, 1, step, 1);
      // A non-finite gradient would throw NON_FINITE_GRADIENT here, naming the weight.
      const report = await core.runStep({ generation: 1, epoch: 0, step, cursor: step * 1024, count: 1024, lr });
      expect(report.localCount).toBe(1024);
      losses.push(report.loss);
      lrs.push(lr);
      await yieldToEventLoop();
    }
    expect(lrs).toEqual([0.025, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05]);
    expect(losses.every(Number.isFinite)).toBe(true);
    expect(losses.at(-1)!).toBeLessThan(0.9 * losses[0]!);
    // One pass holds the whole batch: cnn needs ≈ 0.8 MB per sample, far from wasm's 4 GiB.
    expect(replica.maxPassSamples).toBeGreaterThanOrEqual(1024);
    expect(Array.from(replica.params).every(Number.isFinite)).toBe(true);
  });

  it('measures cnn-large\'s pass limit once, below 2048 (≈ 2 MB of tensors per sample), leaving nothing changed', async () => {
    const data = loadMnist();
    const batch = gatherBatch(data.train.images, data.train.labels, range(UNSPLIT_SAMPLES + 8));
    const measured = await Replica.create({ model: 'cnn-large', seed: 2, optimizer });
    const unmeasured = await Replica.create({ model: 'cnn-large', seed: 2, optimizer, maxPassSamples: 1e9 });
    const outMeasured = new Float32Array(measured.layout.bufferLength);
    const outUnmeasured = new Float32Array(unmeasured.layout.bufferLength);
    const tensors = tf.memory().numTensors;
    await measured.computeGradients(batch, outMeasured);
    expect(tf.memory().numTensors).toBe(tensors);
    await unmeasured.computeGradients(batch, outUnmeasured);
    const limit = measured.maxPassSamples!;
    expect(limit).toBeGreaterThan(batch.size);
    expect(limit).toBeLessThan(2048);
    // The probe's training-mode pass moved the batch-norm moving statistics; they were put back, so the step is the
    // same, bit for bit, as without a probe.
    expect(outMeasured).toEqual(outUnmeasured);
  });
});

describe('a batch computed in passes', () => {
  beforeAll(async () => {
    await initBackend('wasm');
  });

  /** What ranks taking these slices contribute, summed in pass order (Replica.computeGradients' arithmetic). */
  async function asRanks(model: string, batch: Batch, sizes: number[]): Promise<Float32Array> {
    let sum: Float32Array | undefined;
    let start = 0;
    for (const n of sizes) {
      const rank = await Replica.create({ model, seed: 9, optimizer });
      const out = new Float32Array(rank.layout.bufferLength);
      // A rank taking samples [start, start + n) of the stream keys them from start (WorkerCore.localBatch): the same
      // dropout masks as the pass over those samples.
      await rank.computeGradients({ x: batch.x.subarray(start * IMAGE_PIXELS, (start + n) * IMAGE_PIXELS), y: batch.y.subarray(start, start + n), size: n, sampleKey: start }, out);
      if (!sum) sum = out;
      else for (let i = 0; i < rank.layout.lossIndex + 1; i++) sum[i] = sum[i]! + out[i]!;
      start += n;
      rank.model.dispose();
    }
    return sum!;
  }

  it('contributes what ranks taking the passes\' samples would, batch norm included (cnn-large)', async () => {
    const data = loadMnist();
    const batch = gatherBatch(data.train.images, data.train.labels, range(26, 100));
    const sizes = passSizes(26, 10);
    expect(sizes).toEqual([9, 9, 8]);
    const replica = await Replica.create({ model: 'cnn-large', seed: 9, optimizer, maxPassSamples: 10 });
    const out = new Float32Array(replica.layout.bufferLength);
    await replica.computeGradients(batch, out);
    const ranks = await asRanks('cnn-large', batch, sizes);
    const { layout } = replica;
    // Gradients, synced statistics × samples and summed loss: the same bits; the count is the whole batch.
    expect(out.subarray(0, layout.lossIndex + 1)).toEqual(ranks.subarray(0, layout.lossIndex + 1));
    expect(out[layout.countIndex]).toBe(26);
  });

  it('gives a batch-norm-free model the single-pass gradient, up to summation order (cnn)', async () => {
    const data = loadMnist();
    const batch = gatherBatch(data.train.images, data.train.labels, range(48, 300));
    const split = await Replica.create({ model: 'cnn', seed: 4, optimizer, maxPassSamples: 20 });
    const whole = await Replica.create({ model: 'cnn', seed: 4, optimizer });
    const a = new Float32Array(split.layout.bufferLength);
    const b = new Float32Array(whole.layout.bufferLength);
    await split.computeGradients(batch, a);
    await whole.computeGradients(batch, b);
    let maxAbs = 0;
    for (let i = 0; i <= whole.layout.lossIndex; i++) maxAbs = Math.max(maxAbs, Math.abs(b[i]!));
    for (let i = 0; i <= whole.layout.lossIndex; i++) expect(Math.abs(a[i]! - b[i]!), `index ${i}`).toBeLessThan(1e-5 * maxAbs);
    expect(a[whole.layout.countIndex]).toBe(48);
  });
});

describe('passSizes', () => {
  it('splits into the fewest passes within the limit, sizes differing by at most one, larger first', () => {
    expect(passSizes(1024, 2000)).toEqual([1024]);
    expect(passSizes(1024, 1024)).toEqual([1024]);
    expect(passSizes(1024, 305)).toEqual([256, 256, 256, 256]);
    expect(passSizes(1000, 400)).toEqual([334, 333, 333]);
    expect(passSizes(5, 1)).toEqual([1, 1, 1, 1, 1]);
  });
});
