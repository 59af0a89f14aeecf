/**
 * What training-forward.ts buys (issue #17): one process, one Replica, its computeGradients at B=64 through the
 * training forward (layers run as one op on wasm, dropout per sample) and through tfjs-layers' own `model.apply`,
 * alternating, in the same process and state.
 *   npx tsx bench/fused-forward.ts [--model cnn|cnn-large|lenet|mlp] [--rounds 5] [--steps 30] [--batch-size 64] [--json]
 * Each round times `steps` calls of each path after 5 warm-up calls, and reports their medians. The two paths' dropout
 * differs (tfjs-layers' seeded draw against dropout.ts's), so `cnn-large`'s comparison includes that change too.
 */
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/shared/core/backend.js';
import { Replica } from '../src/shared/train/replica.js';
import { flag, median, roundTo } from './common.js';

const model = flag('model', 'cnn');
const rounds = Number(flag('rounds', '5'));
const steps = Number(flag('steps', '30'));
const batchSize = Number(flag('batch-size', '64'));
const json = process.argv.includes('--json');

await initBackend('wasm');
const replica = await Replica.create({ model, seed: 1, optimizer: { name: 'sgd', momentum: 0, weightDecay: 0 } });
const batch = { x: new Float32Array(batchSize * 784).map((_, i) => ((i * 7919) % 256) / 255), y: new Int32Array(batchSize).map((_, i) => i % 10), size: batchSize };
const out = new Float32Array(replica.layout.bufferLength);
// The forward Replica uses, and tfjs-layers' own, swapped in place: the same weights, buffers and step code.
const slot = replica as unknown as { forward: (xs: tf.Tensor, sampleKey?: number) => tf.Tensor };
const paths = {
  'training-forward': slot.forward,
  'model.apply': (xs: tf.Tensor) => replica.logits.apply(xs, { training: true }) as tf.Tensor,
};

async function time(path: keyof typeof paths): Promise<number> {
  slot.forward = paths[path];
  for (let i = 0; i < 5; i++) await replica.computeGradients(batch, out);
  const ms: number[] = [];
  for (let i = 0; i < steps; i++) {
    const start = performance.now();
    await replica.computeGradients(batch, out);
    ms.push(performance.now() - start);
  }
  return median(ms);
}

const results: Array<Record<keyof typeof paths, number>> = [];
for (let r = 0; r < rounds; r++) {
  const fused = await time('training-forward');
  const plain = await time('model.apply');
  results.push({ 'training-forward': roundTo(fused, 2), 'model.apply': roundTo(plain, 2) });
  if (!json) console.log(`round ${r + 1} (${model}, B=${batchSize}): training-forward ${fused.toFixed(2)} ms, model.apply ${plain.toFixed(2)} ms per computeGradients`);
}
const summary = {
  model, batchSize, steps, rounds: results,
  medianMs: { 'training-forward': median(results.map((x) => x['training-forward'])), 'model.apply': median(results.map((x) => x['model.apply'])) },
};
if (json) console.log(JSON.stringify(summary));
else console.log(`median of rounds: training-forward ${summary.medianMs['training-forward']} ms, model.apply ${summary.medianMs['model.apply']} ms`);
