/**
 * One ring rank as a real process (run with `node --import tsx test/helpers/ring-rank.ts <rank> <worldSize> <length> <steps>`).
 * Prints `{"endpoint": ...}` once its inbox is bound, reads the peers array as one JSON line on stdin, then
 * all-reduces randomFloats(length, seed = rank + 1 + 100 * step) for each step and prints
 * `{"results": [base64 of each result]}`.
 */
import { createInterface } from 'node:readline';
import { openRingInbox, RingAllReducer } from '../../src/worker/ring/ring-allreduce.js';
import { randomFloats } from './random.js';

const [rank, worldSize, length, steps] = process.argv.slice(2).map(Number) as [number, number, number, number];
const inbox = await openRingInbox('tcp://127.0.0.1:*');
process.stdout.write(`${JSON.stringify({ endpoint: inbox.endpoint })}\n`);
const lines = createInterface({ input: process.stdin });
const peers = JSON.parse((await lines[Symbol.asyncIterator]().next()).value as string) as string[];
lines.close();

const ring = await RingAllReducer.connect({ rank, worldSize, generation: 1, peers, timeoutMs: 20_000 }, { inbox });
const results: string[] = [];
for (let step = 1; step <= steps; step++) {
  const buf = randomFloats(length, rank + 1 + 100 * step);
  await ring.allReduce(buf, step);
  results.push(Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength).toString('base64'));
}
process.stdout.write(`${JSON.stringify({ results })}\n`);
await ring.close();
