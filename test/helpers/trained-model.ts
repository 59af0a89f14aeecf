import { existsSync, mkdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../../src/shared/core/backend.js';
import { gatherBatch, loadMnist } from '../../src/shared/data/mnist.js';
import { oneHot } from './one-hot.js';
import { buildModel } from '../../src/shared/model/zoo.js';
import { MODEL_JSON, saveModelDir } from '../../src/shared/model/io.js';

/** Bump when the recipe changes so stale caches are not reused. */
const RECIPE = 'cnn-seed1-12000x1-v2';
const TRAIN_EXAMPLES = 12000;

/**
 * A small trained `cnn` checkpoint (test/unit/quantize.test.ts checks it scores > 0.93), trained once per machine and cached under os.tmpdir() so
 * every test file that needs a real model reuses it. Test files run in parallel forks: the first takes a lock
 * directory and trains; the others wait for the finished directory (renamed into place atomically).
 */
export async function trainedModelDir(): Promise<string> {
  const finalDir = join(tmpdir(), `mnist-ddp-test-model-${RECIPE}`);
  const lockDir = `${finalDir}.lock`;
  const deadline = Date.now() + 300_000;
  for (;;) {
    if (existsSync(join(finalDir, MODEL_JSON))) return finalDir;
    if (tryLock(lockDir)) {
      try {
        if (existsSync(join(finalDir, MODEL_JSON))) return finalDir;
        const staging = `${finalDir}.staging-${process.pid}`;
        await trainInto(staging);
        rmSync(finalDir, { recursive: true, force: true });
        renameSync(staging, finalDir);
        return finalDir;
      } finally {
        rmSync(lockDir, { recursive: true, force: true });
      }
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for another process to train ${finalDir} (lock ${lockDir})`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

function tryLock(lockDir: string): boolean {
  try {
    mkdirSync(lockDir);
    return true;
  } catch {
    // A lock left by a killed process: older than the longest training we expect.
    try {
      if (Date.now() - statSync(lockDir).mtimeMs > 240_000) rmSync(lockDir, { recursive: true, force: true });
    } catch { /* raced with its owner */ }
    return false;
  }
}

async function trainInto(dir: string): Promise<void> {
  await initBackend('wasm');
  const { train } = loadMnist();
  const indices = Int32Array.from({ length: TRAIN_EXAMPLES }, (_, i) => i);
  const batch = gatherBatch(train.images, train.labels, indices);
  const model = buildModel('cnn', { seed: 1 });
  model.compile({ optimizer: tf.train.adam(1e-3), loss: 'categoricalCrossentropy', metrics: ['accuracy'] });
  const x = tf.tensor4d(batch.x, [TRAIN_EXAMPLES, 28, 28, 1]);
  const y = tf.tensor2d(oneHot(batch.y), [TRAIN_EXAMPLES, 10]);
  try {
    await model.fit(x, y, { epochs: 1, batchSize: 32, shuffle: true, verbose: 0 });
  } finally {
    x.dispose();
    y.dispose();
  }
  await saveModelDir(model, dir);
  model.dispose();
}

/** Predictions of `model` for normalised images (N×784), in batches; argmax per row. */
export function predictClasses(model: tf.LayersModel, x: Float32Array, count: number, batchSize = 500): { predicted: number[]; probabilities: Float32Array } {
  const predicted: number[] = [];
  const probabilities = new Float32Array(count * 10);
  for (let start = 0; start < count; start += batchSize) {
    const n = Math.min(batchSize, count - start);
    const probs = tf.tidy(() => model.predict(tf.tensor4d(x.subarray(start * 784, (start + n) * 784), [n, 28, 28, 1])) as tf.Tensor2D);
    const values = probs.dataSync() as Float32Array;
    probs.dispose();
    probabilities.set(values, start * 10);
    for (let i = 0; i < n; i++) {
      let best = 0;
      for (let k = 1; k < 10; k++) if (values[i * 10 + k]! > values[i * 10 + best]!) best = k;
      predicted.push(best);
    }
  }
  return { predicted, probabilities };
}
