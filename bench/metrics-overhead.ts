/**
 * What worker metrics cost in training throughput (issue: "Metrics cost at most 2 % of throughput: bench with
 * metrics on against metrics off"). Each round runs the same real training twice, in alternating order so both
 * see the same machine noise: a coordinator + `--workers` real worker processes (bin/mnist-ddp.js),
 *   off: `mnist-ddp worker --no-metrics` (no registry, no default process metrics, no HTTP server), and
 *   on:  metrics on (recordStep every step, prom-client process metrics, /metrics server), scraped every
 *        `--scrape-ms` (1000 ms: 5× deploy/prometheus.yml's rate) from this process.
 * Throughput of a run = median of its per-step global samples/s (history.jsonl; the coordinator's wall time from
 * sending a step to the last step-done, so control-plane round trips count), first 5 steps dropped as warm-up.
 * Prints every round, the medians per mode and on/off.
 *
 *   npx tsx bench/metrics-overhead.ts [--rounds 4] [--workers 1] [--steps 60] [--scrape-ms 1000] [--json]
 *
 * Needs a build (`npx tsc -p tsconfig.build.json`).
 */
import { flag, median } from './common.js';
import { scrapeLoop, startRealRun } from './scrape-latency.js';

const rounds = Number(flag('rounds', '4'));
const workers = Number(flag('workers', '1'));
const steps = Number(flag('steps', '60'));
const scrapeMs = Number(flag('scrape-ms', '1000'));
const json = process.argv.includes('--json');

async function measure(metrics: boolean, seed: number): Promise<{ samplesPerSec: number; scrapes: number }> {
  const run = await startRealRun({ workers, metrics, trainSubset: 60_000, maxSteps: steps, seed });
  try {
    const scraper = metrics ? scrapeLoop(run.workerMetricsPort(0), scrapeMs) : undefined;
    await run.finished;
    const scraped = await scraper?.stop();
    if (metrics && !scraped?.ms.length) throw new Error('the worker was never scraped: is /metrics on?');
    return { samplesPerSec: median(run.stepSamplesPerSec().slice(5)), scrapes: scraped?.ms.length ?? 0 };
  } finally {
    run.kill();
    run.cleanup();
  }
}

const off: number[] = [];
const on: number[] = [];
for (let r = 0; r < rounds; r++) {
  // Alternate which mode goes first so a drifting machine load does not favour one side.
  const order = r % 2 === 0 ? [false, true] : [true, false];
  const got: Record<string, number> = {};
  for (const metrics of order) {
    const m = await measure(metrics, r + 1);
    (metrics ? on : off).push(m.samplesPerSec);
    got[metrics ? 'on' : 'off'] = m.samplesPerSec;
    if (metrics) got.scrapes = m.scrapes;
  }
  if (!json) process.stdout.write(`round ${r + 1}: off ${got.off!.toFixed(1)}  on ${got.on!.toFixed(1)} samples/s  (on/off ${(got.on! / got.off!).toFixed(3)}, ${got.scrapes} scrapes)\n`);
}
const result = {
  workers, steps, rounds, scrapeMs,
  offSamplesPerSec: +median(off).toFixed(1), onSamplesPerSec: +median(on).toFixed(1),
  ratio: +(median(on) / median(off)).toFixed(4),
  /** Median of the per-round on/off ratios: pairs runs that ran back to back. */
  pairedRatio: +median(on.map((v, i) => v / off[i]!)).toFixed(4),
  off: off.map((v) => +v.toFixed(1)), on: on.map((v) => +v.toFixed(1)),
};
if (json) process.stdout.write(`${JSON.stringify(result)}\n`);
else process.stdout.write(`median off ${result.offSamplesPerSec}, on ${result.onSamplesPerSec} samples/s; on/off ${result.ratio} (paired per round ${result.pairedRatio})\n`);
