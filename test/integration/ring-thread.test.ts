import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import * as zmq from 'zeromq';
import { encode } from '../../src/shared/codec.js';
import { isMnistDdpError, type MnistDdpError } from '../../src/shared/errors.js';
import { RingThread, type ThreadedRing } from '../../src/worker/ring-thread.js';
import { randomFloats } from '../helpers/random.js';
import type { Transport } from '../helpers/ring.js';

/** The ring as workers run it: each rank's RingAllReducer on a thread of its own, reached through ThreadedRing. */
const threads: RingThread[] = [];
const sockets: zmq.Socket[] = [];

afterEach(async () => {
  for (const s of sockets.splice(0)) s.close();
  await Promise.all(threads.splice(0).map((t) => t.terminate()));
});

const bindAddress = (transport: Transport): string =>
  transport === 'tcp' ? 'tcp://127.0.0.1:*' : `ipc://${join(tmpdir(), `mnist-ddp-ring-thread-${process.pid}-${randomBytes(6).toString('hex')}`)}`;

async function connectThreaded(transport: Transport, n: number, options: { onRejectedFrame?: (rank: number, err: MnistDdpError) => void } = {}): Promise<ThreadedRing[]> {
  const started = await Promise.all(Array.from({ length: n }, () => RingThread.start()));
  threads.push(...started);
  const peers = await Promise.all(started.map((t) => t.openInbox(bindAddress(transport))));
  return Promise.all(
    started.map((t, rank) =>
      t.connect({ rank, worldSize: n, generation: 1, peers, timeoutMs: 10_000 }, { onRejectedFrame: (err) => options.onRejectedFrame?.(rank, err) }),
    ),
  );
}

/** The float64 sum of the inputs, to within float32 summation error (as in ring.test.ts), and equal bits on every rank. */
function expectSum(inputs: readonly Float32Array[], results: readonly Float32Array[]): void {
  let worst = 0;
  for (let i = 0; i < inputs[0]!.length; i++) {
    let sum = 0;
    let magnitude = 0;
    for (const x of inputs) {
      sum += x[i]!;
      magnitude += Math.abs(x[i]!);
    }
    worst = Math.max(worst, Math.abs(results[0]![i]! - sum) - inputs.length * 2 ** -24 * magnitude);
  }
  expect(worst).toBeLessThanOrEqual(0);
  for (const r of results) expect(Buffer.from(r.buffer, r.byteOffset, r.byteLength).equals(Buffer.from(results[0]!.buffer, results[0]!.byteOffset, results[0]!.byteLength))).toBe(true);
}

describe.each<Transport>(['tcp', 'ipc'])('threaded ring over %s', (transport) => {
  it.each([2, 3])('sums exactly across %i ranks, in allocated buffers and in the caller’s own', async (n) => {
    const ring = await connectThreaded(transport, n);
    let step = 0;
    for (const length of [1, 1000, 1_048_576 + 3]) {
      const inputs = ring.map((_, rank) => randomFloats(length, 7 * length + rank));
      // Allocated: shared with the thread, reduced in place.
      const shared = ring.map((r, rank) => {
        const buf = r.allocate(length);
        buf.set(inputs[rank]!);
        return buf;
      });
      step++;
      const results = await Promise.all(ring.map((r, rank) => r.allReduce(shared[rank]!, step)));
      results.forEach((result, rank) => expect(result).toBe(shared[rank]));
      expect(shared[0]!.buffer).toBeInstanceOf(SharedArrayBuffer);
      expectSum(inputs, results);
      // The caller's own (unshared) memory: copied in and out, same sums.
      const own = inputs.map((x) => x.slice());
      step++;
      const copied = await Promise.all(ring.map((r, rank) => r.allReduce(own[rank]!, step)));
      copied.forEach((result, rank) => expect(result).toBe(own[rank]));
      expectSum(inputs, copied);
    }
  });
});

describe('threaded ring errors', () => {
  it('counts and reports rejected frames with their codes, and still reduces correctly', async () => {
    const seen: string[] = [];
    const ring = await connectThreaded('tcp', 2, { onRejectedFrame: (rank, err) => seen.push(`${rank}:${err.code}`) });
    const intruder = new zmq.Push({ linger: 0 });
    sockets.push(intruder);
    intruder.connect(ring[0]!.endpoint);
    await intruder.send(Buffer.from('definitely not msgpack'));
    await intruder.send(encode({ type: 'ring-chunk', generation: 0, step: 1, rank: 1, phase: 'reduce-scatter', segment: 0, chunk: 0, data: new Float32Array(2) }));
    await vi.waitFor(() => expect(ring[0]!.rejectedFrames).toEqual({ malformed: 1, stale: 1, duplicate: 0, unexpected: 0 }), { timeout: 5000 });
    expect(seen).toEqual(['0:FRAME_MALFORMED', '0:FRAME_STALE']);
    const inputs = [randomFloats(5000, 1), randomFloats(5000, 2)];
    const results = await Promise.all(ring.map((r, rank) => r.allReduce(inputs[rank]!.slice(), 1)));
    expectSum(inputs, results);
  });

  it('rejects with PEER_TIMEOUT naming the dead left neighbour, as a coded MnistDdpError', async () => {
    const ring = await connectThreaded('tcp', 3);
    await ring[0]!.close();
    const error = await ring[1]!.allReduce(new Float32Array(5000), 1, { timeoutMs: 400 }).catch((err: unknown) => err);
    expect(isMnistDdpError(error, 'PEER_TIMEOUT')).toBe(true);
    expect((error as MnistDdpError).details.missingRank).toBe(0);
    expect((error as Error).message).toMatch(/rank 1 waited 400 ms for rank 0 \(left neighbour/);
  });

  it('rejects an invalid configuration with CONFIG_INVALID naming the key', async () => {
    const thread = await RingThread.start();
    threads.push(thread);
    const error = await thread.connect({ rank: 2, worldSize: 2, generation: 0, peers: ['tcp://127.0.0.1:1', 'tcp://127.0.0.1:2'], timeoutMs: 100 }).catch((err: unknown) => err);
    expect(isMnistDdpError(error, 'CONFIG_INVALID')).toBe(true);
    expect((error as Error).message).toContain("'rank'");
  });

  it('fails a pending all-reduce with PEER_LOST when its thread stops, and every later call at once', async () => {
    const ring = await connectThreaded('tcp', 2);
    const pending = ring[0]!.allReduce(new Float32Array(1000), 1).catch((err: unknown) => err);
    await threads[0]!.terminate();
    expect(isMnistDdpError(await pending, 'PEER_LOST')).toBe(true);
    await expect(ring[0]!.allReduce(new Float32Array(10), 2)).rejects.toThrow('ring thread terminated');
    await ring[0]!.close(); // never throws, like RingAllReducer.close
  });
});
