/**
 * All-reduce benchmark: 2 ranks as 2 separate processes over tcp loopback.
 *   npx tsx bench/allreduce.ts [--json] [--chunk-kib 256] [--no-gloo] [--bare] [--curve-rounds 3]
 * The rank processes hold what a worker holds besides the ring (tfjs, its wasm backend and the cnn model: the heap a
 * full GC has to mark); --bare leaves them out. Reports p50/p90 (bench/common.ts `quantile`) of the ring all-reduce
 * at the cnn gradient size (34 826 floats, 136 KiB: issue #4's "133 KiB") and 8 MiB, and in the same run:
 * - the same ring without its scavenges (scavengeEveryBytes 0; young-gc.ts), measured right after;
 * - what CURVE costs (issue #15): a plaintext ring and a CURVE ring between the same two processes, both connected
 *   for the whole run, timed in --curve-rounds rounds (default 3) that alternate which goes first; every round's
 *   p50 of each is reported, with their ratio;
 * - the raw ZeroMQ bandwidth between the same two processes, measured first, while they are still bare (8 MiB
 *   ping-pong, and both ranks sending each other 8 MiB at once in the ring's chunks without reducing: the floor of any
 *   ZeroMQ all-reduce of that size);
 * - PyTorch gloo at the same sizes with the same warm-up and iteration counts (SIZES, passed to
 *   bench/gloo_allreduce.py).
 *
 * A star layout runs as a measured comparison only (issue #4: never the default): a third process, the hub (the
 * coordinator's place in a star), receives every rank's whole buffer in one frame of the ring's encoding (encodeWithPayload),
 * sums them in rank order (with the ring's SIMD add) and sends the sum back to each rank, one after the other. It is
 * a plain star: no chunking or pipelining, and the hub is a third process on the same two cores. Its link carries N
 * buffers each way where a ring rank's carries about one.
 *
 * Both the ring and gloo are timed the same way: a barrier before every iteration (gloo: dist.barrier; the ring: an
 * all-reduce of 2 floats), each rank times its own call, and an iteration counts as the slower rank's time.
 */
import { fork, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import * as zmq from 'zeromq';
import { decodeParts, encodeWithPayload } from '../src/shared/wire/codec.js';
import { DEFAULT_CHUNK_BYTES, DEFAULT_SCAVENGE_EVERY_BYTES, openRingInbox, RingAllReducer } from '../src/worker/ring/ring-allreduce.js';
import { SumArena } from '../src/worker/ring/sum-arena.js';
import { newKeyPair } from '../src/shared/security/keys.js';
import { ReceivedFrameCollector } from '../src/worker/ring/young-gc.js';
import { flag, median, PEER_TIMEOUT_MS, quantile, slowerRank } from './common.js';

const SIZES = [
  { name: '133 KiB', floats: 34_826, warmup: 50, iterations: 400 },
  { name: '8 MiB', floats: (8 * 1024 * 1024) / 4, warmup: 10, iterations: 60 },
] as const;
const RAW_BYTES = 8 * 1024 * 1024;
const RAW_ROUND_TRIPS = 30;

type ParentToChild = { kind: 'peers'; peers: string[]; unscavengedPeers: string[]; rawPeers: string[]; hub: string; curvePeers: string[]; curveKeys: string[] };
type CurveRound = { plaintext: Record<string, number[]>; curve: Record<string, number[]> };
type ChildToParent =
  | { kind: 'endpoints'; rank: number; ring: string; unscavenged: string; raw: string; star: string; curve: string; curveKey: string }
  | {
    kind: 'result'; rank: number; timings: Record<string, number[]>; unscavengedTimings: Record<string, number[]>; starTimings: Record<string, number[]>;
    rawRoundTripMs: number[]; rawExchangeMs: number[]; curveRounds: CurveRound[];
  };
type ParentToHub = { kind: 'ranks'; stars: string[] };
type HubToParent = { kind: 'endpoint'; endpoint: string };


/** One star frame: a rank's whole buffer to the hub, or the hub's sum back to every rank. */
interface StarFrame {
  type: 'star';
  step: number;
  rank: number;
  data: Float32Array;
}

function isStarFrame(m: unknown): m is StarFrame {
  const f = m as Partial<StarFrame> | null;
  return typeof f === 'object' && f !== null && f.type === 'star' && typeof f.step === 'number' && typeof f.rank === 'number' && f.data instanceof Float32Array;
}

async function receiveStar(socket: zmq.Pull): Promise<StarFrame> {
  const message = decodeParts(await socket.receive());
  if (!isStarFrame(message)) throw new Error('star: unexpected frame');
  return message;
}

/**
 * The hub: for every iteration of every size, one frame from each rank, summed in rank order (so every rank gets the
 * same bits), then the sum to each rank. Exits after the last iteration.
 */
async function hub(): Promise<void> {
  const pull = new zmq.Pull({ linger: 0, receiveTimeout: PEER_TIMEOUT_MS });
  await pull.bind('tcp://127.0.0.1:*');
  const ranksMessage = new Promise<ParentToHub>((resolve) => process.once('message', (m) => resolve(m as ParentToHub)));
  process.send?.({ kind: 'endpoint', endpoint: pull.lastEndpoint ?? '' } satisfies HubToParent);
  const { stars } = await ranksMessage;
  const pushes = stars.map((endpoint) => {
    const push = new zmq.Push({ linger: 2000, sendTimeout: PEER_TIMEOUT_MS });
    push.connect(endpoint);
    return push;
  });
  for (const size of SIZES) {
    const frames: (StarFrame | undefined)[] = new Array(pushes.length);
    const arena = new SumArena(size.floats, 0); // the ring's SIMD add, summing in place as the ring does
    const sum = arena.home;
    for (let i = 0; i < size.warmup + size.iterations; i++) {
      frames.fill(undefined);
      for (let n = 0; n < pushes.length; n++) {
        const f = await receiveStar(pull);
        frames[f.rank] = f;
      }
      sum.set(frames[0]!.data);
      for (let r = 1; r < frames.length; r++) arena.sumInto(sum, frames[r]!.data);
      for (const push of pushes) await push.send(encodeWithPayload({ type: 'star', step: frames[0]!.step, rank: -1, data: sum }));
    }
  }
  for (const push of pushes) push.close();
  pull.close();
}

function summarize(samples: readonly number[]): { p50: number; p90: number } {
  return { p50: quantile(samples, 0.5), p90: quantile(samples, 0.9) };
}

/** A numeric flag, or undefined when absent; a value that is not a positive number is an error naming the flag. */
function positiveFlag(name: string): number | undefined {
  const raw = flag(name, '');
  if (raw === '') return undefined;
  const value = Number(raw);
  if (!(value > 0)) throw new Error(`--${name} ${raw}: expected a positive number`);
  return value;
}

/** A barrier of both ranks: an all-reduce of 2 floats on `ring`, with the next of `steps` (they only increase). */
function ringBarrier(ring: RingAllReducer, steps: { next: number }): { barrier: () => Promise<unknown>; step: () => number } {
  const floats = new Float32Array(2);
  return { barrier: () => ring.allReduce(floats, ++steps.next), step: () => ++steps.next };
}

/**
 * Per size, warm-up then timed iterations, each: fill the buffer with rank + 1, barrier, then time `reduce`. Ranks
 * contribute 1 and 2, so every sum must be 3 (first and last element checked, outside the timing).
 */
async function timeSizes(
  rank: number, label: string, barrier: () => Promise<unknown>, bufferOf: (floats: number) => Float32Array, reduce: (buf: Float32Array) => Promise<Float32Array>,
): Promise<Record<string, number[]>> {
  const timings: Record<string, number[]> = {};
  for (const size of SIZES) {
    const buf = bufferOf(size.floats);
    const samples: number[] = [];
    for (let i = 0; i < size.warmup + size.iterations; i++) {
      buf.fill(rank + 1);
      await barrier();
      const t0 = performance.now();
      const sum = await reduce(buf);
      if (i >= size.warmup) samples.push(performance.now() - t0);
      if (sum[0] !== 3 || sum[size.floats - 1] !== 3) throw new Error(`${label} ${size.name} iteration ${i}: wrong sum ${sum[0]} … ${sum[size.floats - 1]}`);
    }
    timings[size.name] = samples;
  }
  return timings;
}

/** The ring timed on buffers from its `allocate`, as the training step uses it (summed in place). */
function timeRing(ring: RingAllReducer, rank: number, label: string, steps: { next: number } = { next: 0 }): Promise<Record<string, number[]>> {
  const { barrier, step } = ringBarrier(ring, steps);
  return timeSizes(rank, label, barrier, (floats) => ring.allocate(floats), (buf) => ring.allReduce(buf, step()));
}

async function child(rank: number, chunkBytes: number | undefined, bare: boolean, curveRounds: number): Promise<void> {
  const send = (m: ChildToParent): void => void process.send?.(m);
  const inbox = await openRingInbox('tcp://127.0.0.1:*', { ...(chunkBytes !== undefined && { chunkBytes }) });
  const unscavengedInbox = await openRingInbox('tcp://127.0.0.1:*', { ...(chunkBytes !== undefined && { chunkBytes }) });
  // The CURVE ring's inbox admits its own key until connect() hands it the left neighbour's.
  const curveKeyPair = newKeyPair();
  const curveInbox = await openRingInbox('tcp://127.0.0.1:*', { ...(chunkBytes !== undefined && { chunkBytes }), curve: { keyPair: curveKeyPair, allowKey: curveKeyPair.publicKey } });
  const rawPull = new zmq.Pull({ linger: 0, receiveTimeout: PEER_TIMEOUT_MS });
  await rawPull.bind('tcp://127.0.0.1:*');
  const starPull = new zmq.Pull({ linger: 0, receiveTimeout: PEER_TIMEOUT_MS });
  await starPull.bind('tcp://127.0.0.1:*');
  const peersMessage = new Promise<ParentToChild>((resolve) => process.once('message', (m) => resolve(m as ParentToChild)));
  send({
    kind: 'endpoints', rank, ring: inbox.endpoint, unscavenged: unscavengedInbox.endpoint, raw: rawPull.lastEndpoint ?? '', star: starPull.lastEndpoint ?? '',
    curve: curveInbox.endpoint, curveKey: curveKeyPair.publicKey,
  });
  const { peers, unscavengedPeers, rawPeers, hub: hubEndpoint, curvePeers, curveKeys } = await peersMessage;

  const config = { rank, worldSize: 2, generation: 1, timeoutMs: PEER_TIMEOUT_MS, ...(chunkBytes !== undefined && { chunkBytes }) };
  const ring = await RingAllReducer.connect({ ...config, peers }, { inbox });
  const unscavenged = await RingAllReducer.connect({ ...config, peers: unscavengedPeers, scavengeEveryBytes: 0 }, { inbox: unscavengedInbox });
  const curveRing = await RingAllReducer.connect({ ...config, peers: curvePeers }, { inbox: curveInbox, curve: { keyPair: curveKeyPair, peerKeys: curveKeys } });
  const steps = { next: 0 }; // the ring's steps, barriers included (they only increase)
  const { barrier } = ringBarrier(ring, steps);
  const raw = await measureRaw(rank, rawPull, rawPeers, barrier, chunkBytes ?? DEFAULT_CHUNK_BYTES);

  // A worker holds tfjs, its wasm backend and the model: the heap every full GC marks. (Imported here: importing
  // them loads tfjs, which --bare leaves out.)
  if (!bare) {
    const [{ initBackend }, { buildModel }] = await Promise.all([import('../src/shared/core/backend.js'), import('../src/shared/model/zoo.js')]);
    await initBackend('wasm');
    buildModel('cnn', { seed: 1 });
  }

  // The ring, then the same ring without scavenges: not interleaved, so that the second one's full GCs (and their
  // marking threads) do not slow the first one's iterations.
  const timings = await timeRing(ring, rank, 'ring', steps);
  const unscavengedTimings = await timeRing(unscavenged, rank, 'ring without scavenges');

  // The star comparison: same sizes, iterations and barrier; the whole buffer to the hub and its sum back.
  const starPush = new zmq.Push({ linger: 2000, sendTimeout: PEER_TIMEOUT_MS });
  starPush.connect(hubEndpoint);
  const starTimings = await timeSizes(rank, 'star', barrier, (floats) => new Float32Array(floats), async (buf) => {
    await starPush.send(encodeWithPayload({ type: 'star', step: steps.next, rank, data: buf }));
    return (await receiveStar(starPull)).data;
  });
  starPush.close();
  starPull.close();

  // CURVE on and off, every round both, alternating which goes first so that drift (heap growth, other load) does not
  // favour one. Each ring keeps its own step counter.
  const curveSteps = { next: 0 };
  const rounds: CurveRound[] = [];
  for (let r = 0; r < curveRounds; r++) {
    const round: Partial<CurveRound> = {};
    for (const which of r % 2 === 0 ? (['plaintext', 'curve'] as const) : (['curve', 'plaintext'] as const)) {
      round[which] = which === 'curve' ? await timeRing(curveRing, rank, 'curve ring', curveSteps) : await timeRing(ring, rank, 'ring', steps);
    }
    rounds.push(round as CurveRound);
  }

  send({ kind: 'result', rank, timings, unscavengedTimings, starTimings, ...raw, curveRounds: rounds });
  await ring.close();
  await unscavenged.close();
  await curveRing.close();
}

/**
 * Raw ZeroMQ between the two ranks, measured first, while the process is bare, and with the ring's scavenges: the
 * best case a ZeroMQ all-reduce could approach.
 */
async function measureRaw(rank: number, rawPull: zmq.Pull, rawPeers: string[], barrier: () => Promise<unknown>, chunkSize: number): Promise<{ rawRoundTripMs: number[]; rawExchangeMs: number[] }> {
  const collector = new ReceivedFrameCollector(DEFAULT_SCAVENGE_EVERY_BYTES);
  // Raw ZeroMQ: one 8 MiB message each way between the same two processes, fresh buffers (no forwarding).
  // Linger so the last reply is not dropped when this side closes right after sending it.
  const rawPush = new zmq.Push({ linger: 2000, sendTimeout: PEER_TIMEOUT_MS });
  rawPush.connect(rawPeers[1 - rank] ?? '');
  const payload = Buffer.alloc(RAW_BYTES, rank);
  const rawRoundTripMs: number[] = [];
  for (let i = 0; i < RAW_ROUND_TRIPS + 3; i++) {
    if (rank === 0) {
      const t0 = performance.now();
      await rawPush.send(payload);
      await rawPull.receive();
      if (i >= 3) rawRoundTripMs.push(performance.now() - t0);
    } else {
      await rawPull.receive();
      await rawPush.send(payload);
    }
    collector.noteReceived(RAW_BYTES);
  }
  // Raw ZeroMQ exchange: both ranks at once send the other the bytes a 2-rank ring moves for 8 MiB (8 MiB each way,
  // in the ring's chunk size) and receive as much, with no reduction: the floor of any ZeroMQ all-reduce here.
  const chunks = Array.from({ length: Math.ceil(RAW_BYTES / chunkSize) }, (_, c) => payload.subarray(c * chunkSize, Math.min(RAW_BYTES, (c + 1) * chunkSize)));
  const rawExchangeMs: number[] = [];
  for (let i = 0; i < RAW_ROUND_TRIPS + 3; i++) {
    await barrier();
    const t0 = performance.now();
    const sending = (async () => {
      for (const c of chunks) await rawPush.send(c);
    })();
    for (let received = 0; received < RAW_BYTES;) received += (await rawPull.receive())[0]!.length;
    await sending;
    if (i >= 3) rawExchangeMs.push(performance.now() - t0);
    collector.noteReceived(RAW_BYTES);
  }
  rawPush.close();
  rawPull.close();
  return { rawRoundTripMs, rawExchangeMs };
}

/** p50 per size over iterations, each the slower of the two gloo ranks (the same statistic as the ring's). */
function runGloo(): Record<string, number> | undefined {
  const script = fileURLToPath(new URL('./gloo_allreduce.py', import.meta.url));
  const args = [script, ...SIZES.map((s) => `${s.name}=${s.floats},${s.warmup},${s.iterations}`)];
  const result = spawnSync('/usr/bin/python3', args, { encoding: 'utf8', timeout: 300_000 });
  if (result.status !== 0) {
    process.stderr.write(`gloo benchmark failed (status ${result.status}):\n${result.stderr}\n`);
    return undefined;
  }
  const lastLine = result.stdout.trim().split('\n').at(-1) ?? '{}';
  const samples = JSON.parse(lastLine) as Record<string, [number[], number[]]>;
  return Object.fromEntries(Object.entries(samples).map(([name, [a, b]]) => [name, median(slowerRank(a, b))]));
}

async function parent(): Promise<void> {
  const json = process.argv.includes('--json');
  const chunkKib = positiveFlag('chunk-kib');
  const curveRounds = positiveFlag('curve-rounds') ?? 3;
  const bare = process.argv.includes('--bare');
  const self = fileURLToPath(import.meta.url);
  const children = [0, 1].map((rank) =>
    fork(self, ['--child', String(rank), '--curve-rounds', String(curveRounds), ...(chunkKib !== undefined ? ['--chunk-bytes', String(chunkKib * 1024)] : []), ...(bare ? ['--bare'] : [])], {
      execArgv: ['--import', 'tsx'],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    }),
  );
  const hubProcess = fork(self, ['--hub'], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  // Listen for exits now: the hub may finish before the ranks report.
  const exited = [...children, hubProcess].map((c) => new Promise((resolve) => c.once('exit', resolve)));
  const hubEndpoint = new Promise<HubToParent>((resolve) => hubProcess.once('message', (m) => resolve(m as HubToParent)));
  const endpoints = await Promise.all(children.map((c) => new Promise<ChildToParent>((resolve) => c.once('message', (m) => resolve(m as ChildToParent)))));
  const ring: string[] = [];
  const unscavenged: string[] = [];
  const raw: string[] = [];
  const star: string[] = [];
  const curvePeers: string[] = [];
  const curveKeys: string[] = [];
  for (const e of endpoints) {
    if (e.kind === 'endpoints') [ring[e.rank], unscavenged[e.rank], raw[e.rank], star[e.rank], curvePeers[e.rank], curveKeys[e.rank]] = [e.ring, e.unscavenged, e.raw, e.star, e.curve, e.curveKey];
  }
  hubProcess.send({ kind: 'ranks', stars: star } satisfies ParentToHub);
  const { endpoint: hubAt } = await hubEndpoint;
  // A rank that dies before reporting fails the bench (instead of leaving nothing to wait on).
  const results = children.map((c, rank) => new Promise<ChildToParent>((resolve, reject) => {
    c.once('message', (m) => resolve(m as ChildToParent));
    c.once('exit', (code) => reject(new Error(`rank ${rank} exited with ${code} before reporting`)));
  }));
  for (const c of children) c.send({ kind: 'peers', peers: ring, unscavengedPeers: unscavenged, rawPeers: raw, hub: hubAt, curvePeers, curveKeys } satisfies ParentToChild);
  const [r0, r1] = await Promise.all(results);
  await Promise.all(exited);
  if (r0?.kind !== 'result' || r1?.kind !== 'result') throw new Error('children did not report results');

  const raw8 = summarize(r0.rawRoundTripMs);
  const exchange8 = summarize(slowerRank(r0.rawExchangeMs, r1.rawExchangeMs));
  const rawBandwidth = (2 * RAW_BYTES) / (raw8.p50 / 1000); // bytes/s moved by one ping-pong
  const gloo = process.argv.includes('--no-gloo') ? undefined : runGloo();
  // An iteration ends when the slower rank ends.
  const rows = SIZES.map((size) => {
    const stats = summarize(slowerRank(r0.timings[size.name], r1.timings[size.name]));
    const unscavengedP50 = median(slowerRank(r0.unscavengedTimings[size.name], r1.unscavengedTimings[size.name]));
    const bytes = size.floats * 4;
    const algBandwidth = bytes / (stats.p50 / 1000);
    const glooP50 = gloo?.[size.name];
    const starP50 = median(slowerRank(r0.starTimings[size.name], r1.starTimings[size.name]));
    return {
      size: size.name,
      floats: size.floats,
      p50Ms: stats.p50,
      p90Ms: stats.p90,
      algBandwidthGBs: algBandwidth / 1e9,
      // A 2-rank ring moves 16 MiB for an 8 MiB buffer (each rank sends half in reduce-scatter and half in
      // all-gather), exactly the bytes of one 8 MiB raw ping-pong; so the fraction of raw bandwidth is RTT / p50
      // (1.0 = as fast as raw ZeroMQ moving the same bytes). Smaller sizes are compared with the 8 MiB raw rate.
      fractionOfRawZmq: (2 * bytes) / (stats.p50 / 1000) / rawBandwidth,
      glooP50Ms: glooP50,
      ringOverGloo: glooP50 !== undefined ? stats.p50 / glooP50 : undefined,
      /** The same ring without scavenges (young-gc.ts), right after: its p50, and how many times the ring's. */
      unscavengedP50Ms: unscavengedP50,
      unscavengedOverRing: unscavengedP50 / stats.p50,
      /** The star comparison (a hub process sums): its p50, and how many times the ring's. */
      starP50Ms: starP50,
      starOverRing: starP50 / stats.p50,
    };
  });
  /** Per round and size: the slower rank's p50 with CURVE off and on, and on/off. */
  const curveCost = r0.curveRounds.map((round, i) => Object.fromEntries(SIZES.map((size) => {
    const plaintextP50 = median(slowerRank(round.plaintext[size.name], r1.curveRounds[i]!.plaintext[size.name]));
    const curveP50 = median(slowerRank(round.curve[size.name], r1.curveRounds[i]!.curve[size.name]));
    return [size.name, { plaintextP50Ms: plaintextP50, curveP50Ms: curveP50, curveOverPlaintext: curveP50 / plaintextP50 }];
  })));
  const report = {
    /** What the rank processes held besides the ring: what a worker holds (tfjs, wasm backend, cnn model) or nothing. */
    ranks: bare ? 'bare' : 'worker-like',
    chunkKib: chunkKib ?? DEFAULT_CHUNK_BYTES / 1024,
    rawZmq8MiB: { roundTripP50Ms: raw8.p50, roundTripP90Ms: raw8.p90, bandwidthGBs: rawBandwidth / 1e9 },
    /** Both ranks sending each other 8 MiB at once, no reduction: what any ZeroMQ all-reduce of 8 MiB must at least take. */
    rawZmqExchange8MiB: { p50Ms: exchange8.p50, p90Ms: exchange8.p90 },
    allReduce: rows,
    curveCost,
  };
  if (json) {
    process.stdout.write(`${JSON.stringify(report)}\n`);
    return;
  }
  const f = (x: number | undefined, d = 2): string => (x === undefined ? '-' : x.toFixed(d));
  process.stdout.write(`raw ZeroMQ tcp loopback, 8 MiB ping-pong: p50 ${f(raw8.p50)} ms, p90 ${f(raw8.p90)} ms → ${f(rawBandwidth / 1e9)} GB/s\n`);
  process.stdout.write(`raw ZeroMQ exchange, 8 MiB each way at once (the ring's bytes, no reduction): p50 ${f(exchange8.p50)} ms, p90 ${f(exchange8.p90)} ms\n`);
  process.stdout.write(`ranks: ${bare ? 'bare processes' : 'worker-like processes (tfjs, wasm backend and the cnn model loaded)'}\n`);
  process.stdout.write('size      ring p50  ring p90  algbw GB/s  of raw  gloo p50  ring/gloo  no-scavenge p50  /ring  star p50  star/ring\n');
  for (const r of rows) {
    process.stdout.write(
      `${r.size.padEnd(9)} ${f(r.p50Ms).padStart(8)}  ${f(r.p90Ms).padStart(8)}  ${f(r.algBandwidthGBs).padStart(10)}  ${f(r.fractionOfRawZmq).padStart(6)}  ${f(r.glooP50Ms).padStart(8)}  ${f(r.ringOverGloo).padStart(9)}  ` +
        `${f(r.unscavengedP50Ms).padStart(15)}  ${f(r.unscavengedOverRing).padStart(5)}  ${f(r.starP50Ms).padStart(8)}  ${f(r.starOverRing).padStart(9)}\n`,
    );
  }
  process.stdout.write('CURVE cost, every round (p50 of the slower rank; rounds alternate which ring goes first):\n');
  process.stdout.write('round  size      plaintext p50  CURVE p50  CURVE/plaintext\n');
  curveCost.forEach((round, i) => {
    for (const [size, c] of Object.entries(round)) {
      process.stdout.write(`${String(i + 1).padStart(5)}  ${size.padEnd(9)} ${f(c.plaintextP50Ms).padStart(13)}  ${f(c.curveP50Ms).padStart(9)}  ${f(c.curveOverPlaintext).padStart(15)}\n`);
    }
  });
}

const childRank = flag('child', '');
if (childRank !== '') {
  await child(Number(childRank), positiveFlag('chunk-bytes'), process.argv.includes('--bare'), positiveFlag('curve-rounds') ?? 3);
} else if (process.argv.includes('--hub')) {
  await hub();
} else {
  await parent();
}
