import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import * as zmq from 'zeromq';
import { isMnistDdpError, type MnistDdpError } from '../../src/shared/core/errors.js';
import { newKeyPair, type CurveKeyPair } from '../../src/shared/security/keys.js';
import { curveClientOptions } from '../../src/shared/security/transport.js';
import { encode } from '../../src/shared/wire/codec.js';
import { LINK_TOKEN_BYTES, type DoublingChunk } from '../../src/shared/wire/ring-messages.js';
import type { RejectReason } from '../../src/shared/wire/reject-reasons.js';
import { DoublingAllReducer, type LinkTokens } from '../../src/worker/ring/doubling-allreduce.js';
import { openRingInbox, type RingInbox } from '../../src/worker/ring/inbox.js';
import { RingAllReducer } from '../../src/worker/ring/ring-allreduce.js';
import { randomFloats } from '../helpers/random.js';
import { until } from '../helpers/poll.js';
import { expectExactSum } from '../helpers/ring.js';

// Issue #16 item 4: recursive doubling over real ZeroMQ sockets on loopback, every rank in this process. It must give
// every rank the same float32 sum (bit-identical) within float32 rounding of the exact one, at world sizes that are
// and are not powers of two, and bind every frame to its sender by the link token when the inbox admits several
// partners (issue #15's rule for the ring: a frame counts only from the peer that holds the claimed rank).

const reducers: DoublingAllReducer[] = [];
const sockets: zmq.Socket[] = [];
const inboxes: RingInbox[] = [];

afterEach(async () => {
  await Promise.all(reducers.splice(0).map((r) => r.close()));
  for (const s of sockets.splice(0)) s.close();
  for (const i of inboxes.splice(0)) if (!i.socket.closed) i.close();
});

/** A token for every directed link s → d (the coordinator issues them per generation). */
function linkTokens(n: number): LinkTokens[] {
  const token = [...Array(n)].map(() => [...Array(n)].map(() => randomBytes(LINK_TOKEN_BYTES)));
  return [...Array(n).keys()].map((r) => ({
    send: new Map([...Array(n).keys()].filter((d) => d !== r).map((d) => [d, token[r]![d]!])),
    receive: new Map([...Array(n).keys()].filter((s) => s !== r).map((s) => [s, token[s]![r]!])),
  }));
}

interface Group { reducers: DoublingAllReducer[]; keys?: CurveKeyPair[]; links?: LinkTokens[]; inboxes: RingInbox[] }

async function connectGroup(n: number, opts: { chunkBytes?: number; curve?: boolean; rejected?: RejectReason[][] } = {}): Promise<Group> {
  const keys = opts.curve ? [...Array(n)].map(() => newKeyPair()) : undefined;
  const links = opts.curve ? linkTokens(n) : undefined;
  const opened: RingInbox[] = [];
  for (let rank = 0; rank < n; rank++) {
    opened.push(await openRingInbox('tcp://127.0.0.1:*', {
      ...(opts.chunkBytes ? { chunkBytes: opts.chunkBytes } : {}),
      ...(keys ? { curve: { keyPair: keys[rank]!, allowKey: [] } } : {}),
    }));
  }
  const peers = opened.map((i) => i.endpoint);
  const group = await Promise.all(opened.map((inbox, rank) => DoublingAllReducer.connect(
    { rank, worldSize: n, generation: 1, peers, timeoutMs: 10_000, ...(opts.chunkBytes ? { chunkBytes: opts.chunkBytes } : {}) },
    {
      inbox,
      ...(keys && links ? { curve: { keyPair: keys[rank]!, peerKeys: keys.map((k) => k.publicKey) }, links: links[rank]! } : {}),
      ...(opts.rejected ? { onRejectedFrame: (_err: MnistDdpError, reason: RejectReason) => opts.rejected![rank]!.push(reason) } : {}),
    },
  )));
  reducers.push(...group);
  return { reducers: group, ...(keys ? { keys } : {}), ...(links ? { links } : {}), inboxes: opened };
}

async function allReduceAll(group: DoublingAllReducer[], length: number, step: number, seed: number): Promise<{ inputs: Float32Array[]; results: Float32Array[] }> {
  const inputs = group.map((_, rank) => randomFloats(length, seed + rank));
  const results = await Promise.all(group.map((r, rank) => r.allReduce(inputs[rank]!.slice(), step)));
  return { inputs, results };
}

describe('recursive doubling all-reduce', () => {
  it.each([2, 3, 4, 5, 6])('N=%i: every rank gets the same sum, exact to float32 rounding, step after step', async (n) => {
    const { reducers: group } = await connectGroup(n);
    expect(group[0]!.schedule.hops).toBe(Math.log2(n) % 1 === 0 ? Math.log2(n) : Math.floor(Math.log2(n)) + 2);
    for (let step = 1; step <= 4; step++) {
      const { inputs, results } = await allReduceAll(group, 34_826, step, 100 * step);
      expectExactSum(inputs, results);
    }
    // What each rank sent (mnistddp_allreduce_bytes_total): its whole buffer once per round it sends in, every step.
    for (const r of group) expect(r.bytesSent).toBe(4 * 4 * 34_826 * r.schedule.rounds.filter((x) => x.sendTo !== undefined).length);
  });

  it('sums a buffer cut into many chunks, with partners running a round ahead', async () => {
    // 4 KiB chunks: a 100 000-float buffer travels as 98 frames per round, so chunks of a later round arrive early.
    const { reducers: group } = await connectGroup(4, { chunkBytes: 4096 });
    for (let step = 1; step <= 3; step++) {
      const { inputs, results } = await allReduceAll(group, 100_000, step, 7 * step);
      expectExactSum(inputs, results);
    }
  });

  it('over CURVE, refuses frames that claim another partner\'s rank (no matching link token), and the sum stays exact', async () => {
    const rejected: RejectReason[][] = [[], [], [], []];
    const { reducers: group, keys, links } = await connectGroup(4, { curve: true, rejected });
    // Rank 1 is an admitted partner of rank 0 (round 1). It speaks for rank 2 (rank 0's round-2 partner): +20 on every
    // value of the step to come, with its own token and with none. Its key passes the inbox; the frames must not.
    const impostor = new zmq.Push({ linger: 0, ...curveClientOptions(keys![1]!, keys![0]!.publicKey) });
    sockets.push(impostor);
    impostor.connect(group[0]!.endpoint);
    const length = 5000;
    const forged = (token?: Uint8Array): Buffer => encode({
      type: 'doubling-chunk', generation: 1, step: 1, rank: 2, round: 2, chunk: 0, ...(token ? { token } : {}), data: new Float32Array(length).fill(20),
    } satisfies DoublingChunk);
    await impostor.send(forged(links![1]!.send.get(0)));
    await impostor.send(forged());
    await until('rank 0 rejecting both forged frames', () => (rejected[0]!.length >= 2 ? true : undefined), 10_000);
    const { inputs, results } = await allReduceAll(group, length, 1, 3);
    expectExactSum(inputs, results);
    expect(rejected[0]).toEqual(['unexpected', 'unexpected']);
    expect(group[0]!.rejectedFrames.unexpected).toBe(2);
  });

  it('reports PEER_TIMEOUT naming the partner that never sends, within the deadline', async () => {
    const { reducers: group } = await connectGroup(2);
    const t0 = Date.now();
    const err = await group[0]!.allReduce(new Float32Array(10), 1, { timeoutMs: 300 }).catch((e: unknown) => e);
    expect(Date.now() - t0).toBeLessThan(2000);
    expect(isMnistDdpError(err) && err.code).toBe('PEER_TIMEOUT');
    expect((err as MnistDdpError).details).toMatchObject({ missingRank: 1, rank: 0, step: 1 });
  });

  it('fails the start-up with PEER_UNREACHABLE naming a partner whose inbox nobody listens on', async () => {
    const inbox = await openRingInbox('tcp://127.0.0.1:*');
    inboxes.push(inbox);
    // Port 9 (discard): nothing listens there. A port freed by this test could be taken by a parallel test's socket.
    const deadEndpoint = 'tcp://127.0.0.1:9';
    const err = await DoublingAllReducer.connect(
      { rank: 0, worldSize: 2, generation: 1, peers: [inbox.endpoint, deadEndpoint], timeoutMs: 10_000, connectTimeoutMs: 500 }, { inbox },
    ).catch((e: unknown) => e);
    expect(isMnistDdpError(err) && err.code).toBe('PEER_UNREACHABLE');
    expect((err as MnistDdpError).details).toMatchObject({ missingRank: 1, address: deadEndpoint });
  });

  // Found in CI: a rank that hears every peer passed its barrier even when its own outgoing link had not come up, so
  // the peer waited out its whole deadline. Rank 1 reaches rank 0; rank 0 is told a dead address for rank 1.
  it.each(['ring', 'doubling'] as const)('%s: a rank whose own link to a peer never comes up fails its start-up with PEER_UNREACHABLE, although it heard that peer', async (collective) => {
    const [inbox0, inbox1] = [await openRingInbox('tcp://127.0.0.1:*'), await openRingInbox('tcp://127.0.0.1:*')] as [RingInbox, RingInbox];
    inboxes.push(inbox0, inbox1);
    const base = { worldSize: 2, generation: 1, timeoutMs: 2_000, connectTimeoutMs: 500 };
    const connect = collective === 'ring' ? RingAllReducer.connect.bind(RingAllReducer) : DoublingAllReducer.connect.bind(DoublingAllReducer);
    const rank1 = connect({ ...base, rank: 1, peers: [inbox0.endpoint, inbox1.endpoint] }, { inbox: inbox1 }).catch((e: unknown) => e);
    const err = await connect({ ...base, rank: 0, peers: [inbox0.endpoint, 'tcp://127.0.0.1:9'] }, { inbox: inbox0 }).catch((e: unknown) => e);
    expect(isMnistDdpError(err) && err.code, String(err)).toBe('PEER_UNREACHABLE');
    expect((err as MnistDdpError).details).toMatchObject({ missingRank: 1, address: 'tcp://127.0.0.1:9' });
    const other = await rank1;
    if (other instanceof DoublingAllReducer || other instanceof RingAllReducer) await other.close();
  });
});
