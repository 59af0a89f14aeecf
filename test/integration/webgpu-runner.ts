/**
 * Child-process runner for the webgpu tests (issue #13): one process per backend, because tensors cannot move
 * between backends and a webgpu tensor read through a wasm op throws in Node. Usage:
 *   echo '<job JSON>' | node --import tsx test/integration/webgpu-runner.ts
 * The job comes on stdin (weights are too big for argv); the result is the last line of stdout, as JSON.
 */
import * as tf from '@tensorflow/tfjs';
import { initBackend, type BackendChoice } from '../../src/shared/core/backend.js';
import { isMnistDdpError } from '../../src/shared/core/errors.js';
import { gatherBatch, loadMnist } from '../../src/shared/data/mnist.js';
import { LocalReducer } from '../../src/shared/train/reducer.js';
import { Replica } from '../../src/shared/train/replica.js';
import { TrainStep } from '../../src/shared/train/step.js';

export type RunnerJob =
  | { task: 'probe' }
  /** Gradient buffer of one batch per model, from `weights` (base64, allWeights order) when given; then one step and an evaluation. */
  | { task: 'grads'; backend: BackendChoice; models: readonly string[]; batch: number; weights?: Record<string, string> }
  /** A short training run through TrainStep and the Evaluator. */
  | { task: 'train'; backend: BackendChoice; model: string; steps: number; batch: number; lr: number; evalSamples: number }
  /** tf.memory().numTensors after each of `steps` training steps. */
  | { task: 'memory'; backend: BackendChoice; model: string; steps: number; batch: number };

export interface GradsResult {
  model: string;
  /** Where each trainable weight and synced buffer sits in `buffer`. */
  slots: { name: string; offset: number; size: number }[];
  weights: string;
  buffer: string;
  evaluated: number;
  lossAfterStep: number;
}

const b64 = (a: Float32Array): string => Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('base64');
const fromB64 = (s: string): Float32Array => {
  const bytes = Buffer.from(s, 'base64');
  return new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
};
const range = (n: number, from = 0): number[] => Array.from({ length: n }, (_, i) => from + i);
const optimizer = { name: 'sgd' as const, momentum: 0.9, weightDecay: 0 };

async function run(job: RunnerJob): Promise<unknown> {
  if (job.task === 'probe') {
    try {
      const selection = await initBackend('webgpu');
      return { ok: true, adapter: selection.adapter };
    } catch (err) {
      return { ok: false, code: isMnistDdpError(err) ? err.code : 'UNCODED', message: (err as Error).message };
    }
  }
  const selection = await initBackend(job.backend);
  const data = loadMnist();
  const train = (ids: number[]) => gatherBatch(data.train.images, data.train.labels, ids);
  const test = (ids: ArrayLike<number>) => gatherBatch(data.test.images, data.test.labels, ids);
  switch (job.task) {
    case 'grads': {
      const out: GradsResult[] = [];
      for (const model of job.models) {
        const replica = await Replica.create({ model, seed: 11, optimizer });
        const given = job.weights?.[model];
        if (given) replica.setAllWeights(fromB64(given));
        // Before the step: a training-mode forward pass updates the batch-norm moving statistics.
        const weights = b64(await replica.allWeights());
        const buffer = new Float32Array(replica.layout.bufferLength);
        await replica.computeGradients(train(range(job.batch, 500)), buffer);
        const slots = [...replica.layout.trainable, ...replica.layout.synced].map(({ name, offset, size }) => ({ name, offset, size }));
        const result = { model, slots, weights, buffer: b64(buffer) };
        const { loss } = replica.applyReduced(buffer.slice(), 0.01, 0);
        const counts = await replica.evaluator.evaluate(range(40), test, { batchSize: 16 });
        out.push({ ...result, evaluated: counts.count, lossAfterStep: loss });
        replica.model.dispose();
      }
      return { backend: selection.backend, models: out };
    }
    case 'train': {
      const replica = await Replica.create({ model: job.model, seed: 3, optimizer });
      const step = new TrainStep(replica, new LocalReducer());
      const losses: number[] = [];
      for (let s = 0; s < job.steps; s++) losses.push((await step.run(train(range(job.batch, s * job.batch)), s, job.lr)).loss);
      const counts = await replica.evaluator.evaluate(range(job.evalSamples), test, { batchSize: 250 });
      const correct = Array.from({ length: 10 }, (_, c) => counts.confusion[c * 10 + c]!).reduce((a, b) => a + b, 0);
      return { backend: selection.backend, accuracy: correct / counts.count, firstLoss: losses[0], lastLoss: losses.at(-1) };
    }
    case 'memory': {
      const replica = await Replica.create({ model: job.model, seed: 5, optimizer });
      const step = new TrainStep(replica, new LocalReducer());
      const counts: number[] = [];
      for (let s = 0; s < job.steps; s++) {
        await step.run(train(range(job.batch, s * job.batch)), s, 0.01);
        counts.push(tf.memory().numTensors);
      }
      return { backend: selection.backend, counts };
    }
  }
}

let input = '';
for await (const chunk of process.stdin) input += String(chunk);
const job = JSON.parse(input) as RunnerJob;
const result = JSON.stringify(await run(job));
// Dawn keeps native handles: exit explicitly, but only once the (large, piped, asynchronous) result is flushed.
process.stdout.write(`\n${result}\n`, () => process.exit(0));
