import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it, vi } from 'vitest';
import { initBackend } from '../../src/shared/core/backend.js';
import { planDataset } from '../../src/shared/data/dataset-plan.js';
import { gatherBatch } from '../../src/shared/data/mnist.js';
import { loadModelDir } from '../../src/shared/model/io.js';
import { LocalReducer } from '../../src/shared/train/reducer.js';
import { Replica } from '../../src/shared/train/replica.js';
import { TrainStep } from '../../src/shared/train/step.js';
import { lastJson, runCli } from '../helpers/cli.js';
import { trainedModelDir } from '../helpers/trained-model.js';

// Issue #6: fine-tuning keeps frozen layers bit-identical, all-reduces only trainable (head) gradients, and
// selects class subsets and label fractions exactly.

const tmp = () => mkdtempSync(join(tmpdir(), 'mnist-ddp-ft-'));

async function layerHashes(dir: string): Promise<Record<string, string>> {
  const model = await loadModelDir(dir);
  const out: Record<string, string> = {};
  for (const layer of model.layers) {
    if (layer.weights.length === 0) continue;
    const h = createHash('sha256');
    for (const w of layer.getWeights()) h.update(Buffer.from((w.dataSync() as Float32Array).buffer));
    out[layer.name] = h.digest('hex');
  }
  return out;
}

let pretrained = '';

describe('fine-tuning', () => {
  beforeAll(async () => {
    await initBackend('wasm');
    // --from needs only a model directory: the cnn the other model tests share (trained once per machine).
    pretrained = await trainedModelDir();
  });

  it.each([0, 2])('keeps frozen layers bit-identical and trains the new head (workers: %i)', async (workers) => {
    const dir = tmp();
    const r = await runCli(['finetune', '--from', pretrained, '--freeze-until', 'pool2', '--new-head', '--classes', '5-9', '--label-fraction', '0.1',
      '--epochs', '1', '--lr', '0.01', '--warmup-steps', '0', '--validation-size', '500', '--workers', String(workers), '--backend', 'wasm', '--no-report', '--json', '--run-dir', dir]);
    expect(r.code, r.stderr).toBe(0);
    const before = await layerHashes(pretrained);
    const after = await layerHashes(join(dir, 'checkpoint'));
    expect(after.conv1).toBe(before.conv1);
    expect(after.conv2).toBe(before.conv2);
    expect(after.head).not.toBe(before.head);
    const state = JSON.parse(readFileSync(join(dir, 'checkpoint', 'state.json'), 'utf8')) as { config: { freeze: string[] } };
    expect(state.config.freeze.sort()).toEqual(['conv1', 'conv2']);
    expect(lastJson<{ testAccuracy: number }>(r.stdout).testAccuracy).toBeGreaterThan(0.5);
  });

  it('all-reduces only the trainable (head) gradients', async () => {
    const model = await loadModelDir(pretrained);
    const replica = await Replica.create({ model, seed: 1, freeze: ['conv1', 'conv2'], optimizer: { name: 'sgd', momentum: 0.9, weightDecay: 0 } });
    expect(replica.layout.trainable.map((s) => s.name)).toEqual(['head/kernel', 'head/bias']);
    expect(replica.layout.paramCount).toBe(1600 * 10 + 10);
    const reducer = new LocalReducer();
    const allReduce = vi.spyOn(reducer, 'allReduce');
    const plan = planDataset({ seed: 1, validationSize: 0, labelFraction: 1, classes: '5-9' });
    const step = new TrainStep(replica, reducer);
    const convBefore = model.getLayer('conv2').getWeights()[0]!.dataSync().slice();
    await step.run(gatherBatch(plan.data.train.images, plan.data.train.labels, plan.train.subarray(0, 32)), 0, 0.1);
    expect(allReduce.mock.calls.map(([buf]) => buf.length)).toEqual([16010 + 2]);
    expect(Buffer.compare(Buffer.from(model.getLayer('conv2').getWeights()[0]!.dataSync().buffer), Buffer.from(convBefore.buffer))).toBe(0);
    model.dispose();
  });

  it('selects class subsets and class-balanced label fractions exactly', () => {
    const plan = planDataset({ seed: 4, validationSize: 5000, labelFraction: 0.1, classes: '5-9' });
    const all = planDataset({ seed: 4, validationSize: 5000, labelFraction: 1, classes: '5-9' });
    const count = (labels: Uint8Array, ids: Int32Array) => Array.from({ length: 10 }, (_, k) => ids.reduce((n, i) => n + (labels[i] === k ? 1 : 0), 0));
    const testCounts = count(plan.data.test.labels, plan.test);
    expect(testCounts).toEqual([0, 0, 0, 0, 0, 892, 958, 1028, 974, 1009]);
    const full = count(plan.data.train.labels, all.train);
    const kept = count(plan.data.train.labels, plan.train);
    for (let k = 0; k < 10; k++) expect(kept[k]).toBe(Math.round(full[k]! * 0.1));
    expect(count(plan.data.train.labels, plan.validation).slice(0, 5)).toEqual([0, 0, 0, 0, 0]);
    expect(new Set(plan.train).size).toBe(plan.train.length);
  });
});
