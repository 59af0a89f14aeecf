/**
 * Ring vs recursive doubling (issue #16 item 4), side by side in one run:
 *   npx tsx bench/collectives.ts [--world 2,3,4] [--sizes 8704,34826,131072,468778,2097152] [--rounds 3]
 *     [--iterations 40] [--warmup 5] [--netns] [--delay-ms 0] [--rate 1gbit] [--json]
 * Each rank is a process (bench/collective-rank.ts) holding both collectives; per size they alternate which goes
 * first from round to round. An iteration's time is its slowest rank's; the table gives the p50 of all rounds and
 * each round's p50. Sizes are floats: 34 826 is `cnn`'s gradient (136 KiB), 468 778 `cnn-large`'s (1.8 MiB).
 * With --netns every rank runs in its own network namespace on a bridge (test/helpers/netns.ts), optionally shaped
 * (--rate, tc tbf) and delayed (--delay-ms on every host's ingress: one hop costs that much more, a round trip twice).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { NamespaceLab } from '../test/helpers/netns.js';
import { flag, median, ROOT, roundTo } from './common.js';

const worlds = flag('world', '2,3,4').split(',').map(Number);
const sizes = flag('sizes', '8704,34826,131072,468778,2097152').split(',').map(Number);
const rounds = Number(flag('rounds', '3'));
const iterations = Number(flag('iterations', '40'));
const warmup = Number(flag('warmup', '5'));
const delayMs = Number(flag('delay-ms', '0'));
const rate = flag('rate', '');
const useNetns = process.argv.includes('--netns');
const json = process.argv.includes('--json');

interface Rank { child: ChildProcess; lines: AsyncIterator<string> }

function startRank(rank: number, worldSize: number, lab: NamespaceLab | undefined): Rank {
  const script = ['--import', 'tsx', 'bench/collective-rank.ts', String(rank), String(worldSize)];
  const child = lab
    ? spawn('ip', ['netns', 'exec', lab.host(`r${rank}`).ns, process.execPath, ...script, lab.host(`r${rank}`).address], { cwd: ROOT, stdio: ['pipe', 'pipe', 'inherit'] })
    : spawn(process.execPath, script, { cwd: ROOT, stdio: ['pipe', 'pipe', 'inherit'] });
  return { child, lines: createInterface({ input: child.stdout! })[Symbol.asyncIterator]() };
}

async function nextJson<T>(r: Rank): Promise<T> {
  const { value, done } = await r.lines.next();
  if (done) throw new Error('a rank exited before answering');
  return JSON.parse(value as string) as T;
}

async function measure(worldSize: number): Promise<Record<string, { p50: number; rounds: number[] }>> {
  const lab = useNetns ? new NamespaceLab([...Array(worldSize).keys()].map((r) => `r${r}`)) : undefined;
  try {
    if (lab) {
      for (let r = 0; r < worldSize; r++) {
        if (rate) lab.shape(`r${r}`, rate);
        if (delayMs > 0) await lab.delay(`r${r}`, { ms: delayMs });
      }
    }
    const ranks = [...Array(worldSize).keys()].map((r) => startRank(r, worldSize, lab));
    const endpoints = await Promise.all(ranks.map((r) => nextJson<{ ring: string; doubling: string }>(r)));
    const spec = { ring: endpoints.map((e) => e.ring), doubling: endpoints.map((e) => e.doubling), sizes, warmup, iterations, rounds };
    for (const r of ranks) r.child.stdin!.end(`${JSON.stringify(spec)}\n`);
    const results = await Promise.all(ranks.map((r) => nextJson<{ times: Record<string, number[]> }>(r)));
    const out: Record<string, { p50: number; rounds: number[] }> = {};
    for (const key of Object.keys(results[0]!.times)) {
      const slowest = results[0]!.times[key]!.map((_, i) => Math.max(...results.map((x) => x.times[key]![i]!)));
      const perRound = [...Array(rounds).keys()].map((k) => roundTo(median(slowest.slice(k * iterations, (k + 1) * iterations)), 3));
      out[key] = { p50: roundTo(median(slowest), 3), rounds: perRound };
    }
    return out;
  } finally {
    lab?.destroy();
  }
}

const profile = useNetns ? `namespaces${rate ? `, tbf ${rate}` : ''}${delayMs ? `, +${delayMs} ms per hop` : ''}` : 'loopback';
const all: Record<number, Record<string, { p50: number; rounds: number[] }>> = {};
for (const n of worlds) all[n] = await measure(n);
if (json) {
  console.log(JSON.stringify({ profile, worlds, sizes, rounds, iterations, results: all }));
} else {
  console.log(`ring vs recursive doubling, ${profile}: p50 of the slowest rank over ${rounds} × ${iterations} iterations (per-round p50s in brackets), ms`);
  console.log(`| N | floats (KiB) | ring | doubling | doubling / ring |`);
  console.log(`| --- | --- | --- | --- | --- |`);
  for (const n of worlds) {
    for (const floats of sizes) {
      const ring = all[n]![`ring ${floats}`]!;
      const doubling = all[n]![`doubling ${floats}`]!;
      console.log(`| ${n} | ${floats} (${Math.round(floats / 256)}) | ${ring.p50} [${ring.rounds.join(', ')}] | ${doubling.p50} [${doubling.rounds.join(', ')}] | ${roundTo(doubling.p50 / ring.p50, 2)} |`);
    }
  }
}
