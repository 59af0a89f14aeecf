/**
 * Where data-parallel efficiency falls below 80 % (issue #16, "a scaling model"), from measured inputs:
 *   npx tsx bench/scaling-model.ts --compute cnn=36.8,cnn-large=880 --bytes cnn=139304,cnn-large=1875112 \
 *     --links "loopback:0.05:1500,1 Gbit/s:0.25:117,100 Mbit/s + 10 ms:10:11.7" [--target 0.8] [--json]
 * --compute: one rank's compute per step in ms (forward, backward, optimiser; `mnist-ddp bench`); --bytes: the
 * gradient buffer each step all-reduces; --links: name:α:β, where α is the one-way cost of a hop in ms and β the
 * bandwidth in MB/s (fitted to bench/link-profiles.ts's ring measurements). With no overlap of compute and
 * communication (this trainer reduces after the backward pass), a step takes compute + all-reduce, and
 *   ring:      t(N) = 2(N−1)·α + 2(N−1)/N · bytes/β
 *   doubling:  t(N) = h(N)·(α + bytes/β), h(N) = log2(N) for powers of two, ⌊log2 N⌋ + 2 otherwise
 * (doubling-schedule.ts). Efficiency is compute / (compute + t(N)): the samples/s of N ranks over N × one rank's.
 * The script prints, per model and link, efficiency at N = 2, 4, 8, 16, 32 for both collectives (and the better of
 * the two, which --collective auto approximates by size), and the largest N that keeps the target.
 */
import { flag, roundTo } from './common.js';

const target = Number(flag('target', '0.8'));
const pairs = (spec: string): Map<string, number> => new Map(spec.split(',').map((kv) => kv.split('=') as [string, string]).map(([k, v]) => [k, Number(v)]));
const compute = pairs(flag('compute', 'cnn=36.8,cnn-large=880'));
const bytes = pairs(flag('bytes', 'cnn=139304,cnn-large=1875112'));
const links = flag('links', 'loopback:0.05:1500,1 Gbit/s:0.25:117,100 Mbit/s + 10 ms:10:11.7').split(',').map((s) => {
  const [name, alpha, beta] = s.split(':');
  return { name: name!, alphaMs: Number(alpha), betaBytesPerMs: Number(beta) * 1000 };
});
const worlds = [2, 4, 8, 16, 32];

const doublingHops = (n: number): number => (Number.isInteger(Math.log2(n)) ? Math.log2(n) : Math.floor(Math.log2(n)) + 2);
const ringMs = (n: number, b: number, l: (typeof links)[number]): number => 2 * (n - 1) * l.alphaMs + ((2 * (n - 1)) / n) * (b / l.betaBytesPerMs);
const doublingMs = (n: number, b: number, l: (typeof links)[number]): number => doublingHops(n) * (l.alphaMs + b / l.betaBytesPerMs);
const efficiency = (c: number, t: number): number => c / (c + t);

const MAX_N = 4096;

/** The largest N (up to MAX_N, shown as "≥ MAX_N") whose efficiency with `t` stays at or above the target; 1 when even N = 2 falls below. */
function largestN(c: number, t: (n: number) => number): number | string {
  let best = 1;
  for (let n = 2; n <= MAX_N; n++) if (efficiency(c, t(n)) >= target) best = n;
  return best === MAX_N ? `≥ ${MAX_N}` : best;
}

const rows: Record<string, unknown>[] = [];
for (const [model, c] of compute) {
  const b = bytes.get(model);
  if (b === undefined) throw new Error(`--bytes has no entry for ${model}`);
  for (const l of links) {
    const ring = worlds.map((n) => roundTo(efficiency(c, ringMs(n, b, l)), 2));
    const doubling = worlds.map((n) => roundTo(efficiency(c, doublingMs(n, b, l)), 2));
    rows.push({
      model, link: l.name, computeMs: c, bytes: b, ring, doubling,
      largestRingN: largestN(c, (n) => ringMs(n, b, l)),
      largestDoublingN: largestN(c, (n) => doublingMs(n, b, l)),
      largestBestN: largestN(c, (n) => Math.min(ringMs(n, b, l), doublingMs(n, b, l))),
    });
  }
}

if (process.argv.includes('--json')) {
  console.log(JSON.stringify({ target, worlds, links, rows }));
} else {
  console.log(`efficiency at N = ${worlds.join(', ')} (ring / recursive doubling), and the largest N at ≥ ${target * 100} %`);
  console.log('| model | link | compute ms | ring | doubling | largest N: ring / doubling / best of both |');
  console.log('| --- | --- | --- | --- | --- | --- |');
  for (const r of rows) {
    console.log(`| ${String(r.model)} | ${String(r.link)} | ${String(r.computeMs)} | ${(r.ring as number[]).join(' ')} | ${(r.doubling as number[]).join(' ')} | ${String(r.largestRingN)} / ${String(r.largestDoublingN)} / ${String(r.largestBestN)} |`);
  }
}
