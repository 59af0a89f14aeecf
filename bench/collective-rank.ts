/**
 * One rank of bench/collectives.ts, a process of its own (possibly inside a network namespace):
 *   node --import tsx bench/collective-rank.ts <rank> <worldSize> <bindHost>
 * Prints {"ring": endpoint, "doubling": endpoint} once both inboxes are bound, reads one JSON line
 * {"ring": peers, "doubling": peers, "sizes": [floats...], "warmup": n, "iterations": n, "rounds": n} from stdin, then
 * times both collectives on every size, alternating which goes first from round to round, and prints
 * {"times": {"<collective> <floats>": [ms per iteration, all rounds]}}. Before every timed call all ranks pass a
 * barrier (a 2-float ring all-reduce), so an iteration's time is this rank's share of one synchronous all-reduce.
 */
import { createInterface } from 'node:readline';
import { DoublingAllReducer } from '../src/worker/ring/doubling-allreduce.js';
import { openRingInbox, RingAllReducer } from '../src/worker/ring/ring-allreduce.js';
import type { AllReducer } from '../src/shared/train/reducer.js';
import { PEER_TIMEOUT_MS } from './common.js';

const [rank, worldSize] = process.argv.slice(2, 4).map(Number) as [number, number];
const bindHost = process.argv[4] ?? '127.0.0.1';
const ringInbox = await openRingInbox(`tcp://${bindHost}:*`);
const doublingInbox = await openRingInbox(`tcp://${bindHost}:*`);
process.stdout.write(`${JSON.stringify({ ring: ringInbox.endpoint, doubling: doublingInbox.endpoint })}\n`);
const lines = createInterface({ input: process.stdin });
const spec = JSON.parse((await lines[Symbol.asyncIterator]().next()).value as string) as {
  ring: string[]; doubling: string[]; sizes: number[]; warmup: number; iterations: number; rounds: number;
};
lines.close();

const base = { rank, worldSize, generation: 1, timeoutMs: PEER_TIMEOUT_MS };
const ring = await RingAllReducer.connect({ ...base, peers: spec.ring }, { inbox: ringInbox });
const doubling = await DoublingAllReducer.connect({ ...base, peers: spec.doubling }, { inbox: doublingInbox });
const steps = new Map<AllReducer, number>([[ring, 0], [doubling, 0]]);
const next = (r: AllReducer): number => {
  const s = steps.get(r)! + 1;
  steps.set(r, s);
  return s;
};
const barrierBuf = new Float32Array(2);
const times: Record<string, number[]> = {};
for (let round = 0; round < spec.rounds; round++) {
  const order: [string, AllReducer][] = round % 2 === 0 ? [['ring', ring], ['doubling', doubling]] : [['doubling', doubling], ['ring', ring]];
  for (const floats of spec.sizes) {
    for (const [name, reducer] of order) {
      const buf = reducer.allocate(floats);
      const key = `${name} ${floats}`;
      times[key] ??= [];
      for (let i = 0; i < spec.warmup + spec.iterations; i++) {
        buf.fill(rank + 1);
        await ring.allReduce(barrierBuf, next(ring));
        const t0 = performance.now();
        await reducer.allReduce(buf, next(reducer));
        const ms = performance.now() - t0;
        if (i >= spec.warmup) times[key].push(ms);
      }
      // Every rank must end with the sum 1 + 2 + … + N: a collective that is fast and wrong is no result.
      const expected = (worldSize * (worldSize + 1)) / 2;
      if (buf[0] !== expected || buf[floats - 1] !== expected) throw new Error(`${key}: rank ${rank} got ${buf[0]}, expected ${expected}`);
    }
  }
}
process.stdout.write(`${JSON.stringify({ times })}\n`);
await ring.close();
await doubling.close();
