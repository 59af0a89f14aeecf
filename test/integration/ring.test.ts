import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it, vi } from 'vitest';
import * as zmq from 'zeromq';
import { encode } from '../../src/shared/wire/codec.js';
import { isMnistDdpError, type MnistDdpError } from '../../src/shared/core/errors.js';
import { PROTOCOL_VERSION, type RingChunk } from '../../src/shared/wire/ring-messages.js';
import type { RejectReason } from '../../src/shared/wire/reject-reasons.js';
import { LocalReducer } from '../../src/shared/train/reducer.js';
import { DEFAULT_CHUNK_BYTES, RingAllReducer, type RingInbox } from '../../src/worker/ring/ring-allreduce.js';
import { chunkBounds, ringLayout } from '../../src/worker/ring/topology.js';
import { SumArena } from '../../src/worker/ring/sum-arena.js';
import { ReceivedFrameCollector } from '../../src/worker/ring/young-gc.js';
import { randomFloats } from '../helpers/random.js';
import { connectRing, expectExactSum, openInboxes, type Transport } from '../helpers/ring.js';

const reducers: RingAllReducer[] = [];
const sockets: zmq.Socket[] = [];
const inboxes: RingInbox[] = [];
const children: ChildProcess[] = [];

afterEach(async () => {
  await Promise.all(reducers.splice(0).map((r) => r.close()));
  for (const s of sockets.splice(0)) s.close();
  for (const i of inboxes.splice(0)) if (!i.socket.closed) i.socket.close();
  for (const c of children.splice(0)) if (c.exitCode === null) c.kill('SIGKILL');
});

/** All-reduces random inputs (seed + rank) in `buffers` (default: fresh copies) and checks the sums. */
async function allReduceRing(ring: RingAllReducer[], length: number, step: number, seed: number, buffers?: Float32Array[]): Promise<void> {
  const inputs = ring.map((_, rank) => randomFloats(length, seed + rank));
  if (buffers) buffers.forEach((buf, rank) => buf.set(inputs[rank]!));
  else buffers = inputs.map((x) => x.slice());
  const results = await Promise.all(ring.map((r, rank) => r.allReduce(buffers[rank]!, step)));
  results.forEach((result, rank) => expect(result).toBe(buffers[rank]));
  expectExactSum(inputs, results);
}

describe.each<Transport>(['tcp', 'ipc'])('ring all-reduce over %s', (transport) => {
  it.each([2, 3, 4])('sums exactly across %i ranks for awkward and large sizes', async (n) => {
    const chunkFloats = 1024;
    const ring = await connectRing(transport, n, reducers, { chunkBytes: chunkFloats * 4 });
    const sizes = [1, n - 1, n + 1, 1000, n * chunkFloats - 1, n * chunkFloats * 3 + 7, 1_048_576 + 3];
    let step = 0;
    for (const length of sizes) await allReduceRing(ring, length, ++step, 17 * length);
  });

  it.each([2, 3])('sums in place in buffers from allocate (%i ranks), between all-reduces of two other lengths', async (n) => {
    const ring = await connectRing(transport, n, reducers);
    const length = 700_001;
    const shared = ring.map((r) => r.allocate(length));
    const sums = vi.spyOn(SumArena.prototype, 'sumInto');
    let step = 0;
    try {
      for (let round = 0; round < 3; round++) {
        await allReduceRing(ring, length, ++step, 1000 * round, shared);
        // Other lengths in between, as the benchmarks' barriers do: they must not push the allocated buffer out.
        await allReduceRing(ring, 5, ++step, round);
        await allReduceRing(ring, 77, ++step, round);
      }
      // Every reduce-scatter sum into the allocated buffers was made by the arena that holds them: in place.
      const big = sums.mock.calls.map(([target], i) => ({ target, arena: sums.mock.contexts[i] as SumArena })).filter(({ target }) => target.length > 77);
      // Per round, each rank sums every chunk but those of its own segment (which it sends first).
      const layout = ringLayout(length, n, DEFAULT_CHUNK_BYTES / 4);
      expect(big.length).toBe(3 * ring.reduce((total, _, rank) => total + layout.totalChunks - (layout.chunksInSegment[rank] ?? 0), 0));
      for (const { target, arena } of big) expect(arena.holds(target)).toBe(true);
    } finally {
      sums.mockRestore();
    }
  });

  it('reports 2(N-1)/N of each all-reduced buffer as received, for the scavenges (young-gc.ts)', async () => {
    const noted = vi.spyOn(ReceivedFrameCollector.prototype, 'noteReceived');
    try {
      const ring = await connectRing(transport, 3, reducers);
      await allReduceRing(ring, 30_000, 1, 5);
      // Each of the 3 ranks received 2 of the 3 segments twice (reduce-scatter, all-gather): 4/3 of 120 000 bytes.
      expect(noted.mock.calls.map(([bytes]) => bytes)).toEqual([160_000, 160_000, 160_000]);
      // And sent as much (mnistddp_allreduce_bytes_total): 2 of 3 segments, twice.
      expect(ring.map((r) => r.bytesSent)).toEqual([160_000, 160_000, 160_000]);
    } finally {
      noted.mockRestore();
    }
  });

  it('sums a multi-MiB buffer with the default chunk size, several steps in a row', async () => {
    const ring = await connectRing(transport, 3, reducers);
    for (let step = 1; step <= 3; step++) await allReduceRing(ring, 1_500_007, step, step * 31);
  });
});

describe('ring all-reduce robustness', () => {
  const chunkOf = (length: number, segment: number, data: Float32Array, overrides: Partial<RingChunk>): RingChunk => {
    const [start, end] = chunkBounds(ringLayout(length, 2, 1 << 16), segment, 0);
    return { type: 'ring-chunk', generation: 1, step: 1, rank: 1, phase: 'reduce-scatter', segment, chunk: 0, data: data.slice(start, end), ...overrides };
  };

  it.each<Transport>(['tcp', 'ipc'])('counts malformed, stale, duplicate and unexpected frames over %s and still reduces correctly', async (transport) => {
    const ring = await connectRing(transport, 2, reducers);
    const [rank0, rank1] = ring as [RingAllReducer, RingAllReducer];
    const intruder = new zmq.Push({ linger: 0 });
    sockets.push(intruder);
    intruder.connect(rank0.endpoint);

    const length = 1001;
    const input1 = randomFloats(length, 2);
    await intruder.send(Buffer.from('definitely not msgpack'));
    await intruder.send(encode({ type: 'ring-chunk', step: 'one' }));
    await intruder.send(encode({ hello: 'world' }));
    await intruder.send(encode(chunkOf(length, 1, input1, { generation: 0 })));
    await intruder.send(encode(chunkOf(length, 1, input1, { generation: 9 })));
    await intruder.send(encode(chunkOf(length, 1, input1, { rank: 0 })));
    await intruder.send([Buffer.from('a'), Buffer.from('b')]);
    await intruder.send(encode({ type: 'ring-hello', protocolVersion: PROTOCOL_VERSION, generation: 0, worldSize: 2, rank: 1, origin: 1 }));
    await vi.waitFor(() => expect(rank0.rejectedFrames).toEqual({ malformed: 4, stale: 2, duplicate: 0, unexpected: 2 }), { timeout: 5000 });

    // Step 1: rank 0 alone receives an exact copy of rank 1's first frame (so the sum stays right) and then the
    // real one, which must be refused as a duplicate; a chunk with a wrong length and one outside the layout too.
    const input0 = randomFloats(length, 1);
    const buf0 = input0.slice();
    const buf1 = input1.slice();
    const pending0 = rank0.allReduce(buf0, 1);
    await intruder.send(encode(chunkOf(length, 1, input1, {})));
    await intruder.send(encode(chunkOf(length, 1, input1, { data: new Float32Array(3) })));
    await intruder.send(encode(chunkOf(length, 1, input1, { segment: 7 })));
    await vi.waitFor(() => expect(rank0.rejectedFrames.unexpected).toBe(4), { timeout: 5000 });
    const [r0, r1] = await Promise.all([pending0, rank1.allReduce(buf1, 1)]);
    expect(rank0.rejectedFrames.duplicate).toBe(1);
    expectExactSum([input0, input1], [r0, r1]);

    // A replay of a finished step is stale and does not disturb the next one.
    await intruder.send(encode(chunkOf(length, 1, input1, {})));
    await vi.waitFor(() => expect(rank0.rejectedFrames.stale).toBe(3), { timeout: 5000 });
    await allReduceRing(ring, length, 2, 99);
    expect(rank0.rejectedFrames).toEqual({ malformed: 4, stale: 3, duplicate: 1, unexpected: 4 });
    expect(rank1.rejectedFrames).toEqual({ malformed: 0, stale: 0, duplicate: 0, unexpected: 0 });
  });

  it('passes each rejected frame to onRejectedFrame with its reason and matching code (issue #12)', async () => {
    const inboxPair = await openInboxes('tcp', 2);
    const peers = inboxPair.map((i) => i.endpoint);
    const seen: { code: string; reason: RejectReason }[] = [];
    const ring = await Promise.all(
      inboxPair.map((inbox, rank) =>
        RingAllReducer.connect({ rank, worldSize: 2, generation: 1, peers, timeoutMs: 10_000 }, { inbox, onRejectedFrame: rank === 0 ? (err, reason) => seen.push({ code: err.code, reason }) : undefined }),
      ),
    );
    reducers.push(...ring);
    const intruder = new zmq.Push({ linger: 0 });
    sockets.push(intruder);
    intruder.connect(ring[0]!.endpoint);
    await intruder.send(Buffer.from('definitely not msgpack'));
    await intruder.send(encode(chunkOf(11, 1, randomFloats(11, 1), { generation: 0 })));
    await intruder.send(encode(chunkOf(11, 1, randomFloats(11, 1), { rank: 0 })));
    await vi.waitFor(() => expect(seen).toHaveLength(3), { timeout: 5000 });
    expect(seen).toEqual([
      { code: 'FRAME_MALFORMED', reason: 'malformed' },
      { code: 'FRAME_STALE', reason: 'stale' },
      { code: 'FRAME_UNEXPECTED', reason: 'unexpected' },
    ]);
    expect(ring[0]!.rejectedFrames).toEqual({ malformed: 1, stale: 1, duplicate: 0, unexpected: 1 });
  });

  it('fails every misuse of allReduce with a coded error, as a rejected promise (issue #12)', async () => {
    const failure = (p: Promise<unknown>): Promise<unknown> => p.then(() => undefined, (err: unknown) => err);
    const [rank0, rank1] = (await connectRing('tcp', 2, reducers)) as [RingAllReducer, RingAllReducer];
    const running = rank0.allReduce(new Float32Array(10), 1);
    let busy: Promise<Float32Array> | undefined;
    expect(() => (busy = rank0.allReduce(new Float32Array(10), 2))).not.toThrow();
    expect(isMnistDdpError(await failure(busy!), 'ALLREDUCE_BUSY')).toBe(true);
    await Promise.all([running, rank1.allReduce(new Float32Array(10), 1)]);
    for (const step of [1, 0, 2.5, Number.NaN]) {
      let outOfOrder: Promise<Float32Array> | undefined;
      expect(() => (outOfOrder = rank0.allReduce(new Float32Array(10), step))).not.toThrow();
      const error = await failure(outOfOrder!);
      expect(isMnistDdpError(error, 'STEP_OUT_OF_ORDER'), `step ${step}: ${String(error)}`).toBe(true);
    }
    await rank0.close();
    expect(isMnistDdpError(await failure(rank0.allReduce(new Float32Array(10), 3)), 'PEER_LOST')).toBe(true);
  });

  it('reports PEER_TIMEOUT naming the dead left neighbour within the deadline', async () => {
    const ring = await connectRing('tcp', 3, reducers);
    await ring[0]!.close();
    const started = performance.now();
    const error = await ring[1]!.allReduce(new Float32Array(5000), 1, { timeoutMs: 400 }).catch((err: unknown) => err);
    const elapsed = performance.now() - started;
    expect(isMnistDdpError(error, 'PEER_TIMEOUT')).toBe(true);
    expect((error as MnistDdpError).details.missingRank).toBe(0);
    expect((error as MnistDdpError).message).toMatch(/rank 1 waited 400 ms for rank 0 \(left neighbour/);
    expect(elapsed).toBeGreaterThanOrEqual(390);
    expect(elapsed).toBeLessThan(2000);
  });

  it('fails the start-up barrier with PEER_TIMEOUT naming a rank that never starts', async () => {
    const [inbox0, inbox1] = (await openInboxes('tcp', 2)) as [RingInbox, RingInbox];
    inboxes.push(inbox1);
    const error = await RingAllReducer.connect(
      { rank: 0, worldSize: 2, generation: 1, peers: [inbox0.endpoint, inbox1.endpoint], timeoutMs: 300 },
      { inbox: inbox0 },
    ).catch((err: unknown) => err);
    expect(isMnistDdpError(error, 'PEER_TIMEOUT')).toBe(true);
    expect((error as MnistDdpError).details.missingRank).toBe(1);
  });

  it('rejects an invalid configuration naming the key', async () => {
    const error = await RingAllReducer.connect({ rank: 2, worldSize: 2, generation: 0, peers: ['tcp://127.0.0.1:1', 'tcp://127.0.0.1:2'], timeoutMs: 100 }).catch(
      (err: unknown) => err,
    );
    expect(isMnistDdpError(error, 'CONFIG_INVALID')).toBe(true);
    expect((error as Error).message).toContain("'rank'");
  });

  it('LocalReducer returns the buffer unchanged', async () => {
    const reducer = new LocalReducer();
    const buf = new Float32Array([1, 2, 3]);
    expect(await reducer.allReduce(buf)).toBe(buf);
    expect(Array.from(buf)).toEqual([1, 2, 3]);
    await reducer.close();
  });
});

describe('ring all-reduce across processes', () => {
  it('3 ranks as child processes agree on the exact sum', async () => {
    const fixture = fileURLToPath(new URL('../helpers/ring-rank.ts', import.meta.url));
    const worldSize = 3;
    const length = 300_001;
    const steps = 2;
    const procs = [0, 1, 2].map((rank) => {
      const child = spawn(process.execPath, ['--import', 'tsx', fixture, String(rank), String(worldSize), String(length), String(steps)], {
        stdio: ['pipe', 'pipe', 'inherit'],
      });
      children.push(child);
      return { child, lines: createInterface({ input: child.stdout! })[Symbol.asyncIterator]() };
    });
    const withDeadline = <T>(p: Promise<T>, what: string): Promise<T> =>
      Promise.race([p, new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), 60_000).unref())]);
    const endpoints = await withDeadline(
      Promise.all(procs.map(async (p) => (JSON.parse((await p.lines.next()).value as string) as { endpoint: string }).endpoint)),
      'child endpoints',
    );
    for (const p of procs) p.child.stdin!.write(`${JSON.stringify(endpoints)}\n`);
    const outputs = await withDeadline(
      Promise.all(procs.map(async (p) => (JSON.parse((await p.lines.next()).value as string) as { results: string[] }).results)),
      'child results',
    );
    for (let step = 1; step <= steps; step++) {
      const inputs = [0, 1, 2].map((rank) => randomFloats(length, rank + 1 + 100 * step));
      const results = outputs.map((o) => {
        const bytes = Buffer.from(o[step - 1] ?? '', 'base64');
        return new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
      });
      expectExactSum(inputs, results);
    }
  });
});
