/**
 * What synchronous data parallelism can get from this machine at all, measured without any all-reduce.
 *
 * Every contender runs the same work: the `cnn` replica's forward + backward + update on a fixed batch (64), in
 * its own process, one thread each. Per round, interleaved so they see the same machine noise:
 *   - solo:          one process alone;
 *   - free pair:     two processes at once, never waiting for each other (what two cores give two processes);
 *   - lockstep pair: two processes at once that wait for each other after every step (a 1-byte ZeroMQ barrier,
 *                    no gradients exchanged): what ANY synchronous 2-worker trainer pays for its slower rank;
 *   - mnist-ddp `bench --workers 1` and `--workers 2`: the product, in the same rounds.
 * Pairs start their timed steps together (a barrier after warm-up) and are timed from the first start to the last
 * end; the product's runs are taken over their whole timed span too. Lockstep pair / solo bounds what a synchronous
 * 2-worker trainer can gain over one bare process here. The product has a coordinator process besides its workers,
 * so it is read against the lockstep pair directly: mnist-ddp 2w / lockstep pair is what the gradient all-reduce and
 * the control plane cost on top of the synchronisation itself.
 *
 *   npx tsx bench/lockstep.ts [--rounds 5] [--steps 100] [--json]
 *
 * Needs a build (`npx tsc -p tsconfig.build.json`) for the mnist-ddp contenders.
 */
import * as zmq from 'zeromq';
import { initBackend } from '../src/shared/core/backend.js';
import { IMAGE_PIXELS, NUM_CLASSES } from '../src/shared/data/mnist.js';
import { Replica } from '../src/shared/train/replica.js';
import { Rng } from '../src/shared/data/rng.js';
import { flag, freePort, median, PEER_TIMEOUT_MS, roundTo, runJson, runJsonAsync, slowerRank } from './common.js';

const BATCH = 64;
const WARMUP = 10;

interface ChildResult {
  /** Wall-clock start and end of the timed steps (ms since the epoch, sub-ms precision): pairs are timed over both. */
  startedAt: number;
  endedAt: number;
  /** Per-step compute times (ms), barrier excluded. */
  computeMs: number[];
}


/** One contender process: `--child <mode> <rank> <port> <steps>`. Prints one JSON line (ChildResult). */
async function child(mode: 'solo' | 'free' | 'lockstep', rank: number, port: number, steps: number): Promise<void> {
  await initBackend('wasm');
  const replica = await Replica.create({ model: 'cnn', seed: 1, optimizer: { name: 'sgd', momentum: 0.9, weightDecay: 0 } });
  const rng = new Rng(7 + rank);
  const batch = {
    x: Float32Array.from({ length: BATCH * IMAGE_PIXELS }, () => rng.nextFloat()),
    y: Int32Array.from({ length: BATCH }, () => rng.nextInt(NUM_CLASSES)),
    size: BATCH,
  };
  const buffer = new Float32Array(replica.layout.bufferLength);
  // Pairs start their timed steps together (one barrier after warm-up); lockstep also meets after every step.
  let peer: zmq.Pair | undefined;
  if (mode !== 'solo') {
    peer = new zmq.Pair({ linger: 0, receiveTimeout: PEER_TIMEOUT_MS, sendTimeout: PEER_TIMEOUT_MS });
    if (rank === 0) await peer.bind(`tcp://127.0.0.1:${port}`);
    else peer.connect(`tcp://127.0.0.1:${port}`);
  }
  const barrier = async (): Promise<void> => {
    await peer!.send('b');
    await peer!.receive();
  };
  const sync = mode === 'lockstep' ? barrier : async (): Promise<void> => {};
  const step = async (): Promise<void> => {
    await replica.computeGradients(batch, buffer);
    replica.applyReduced(buffer, 0.001, 0);
  };
  for (let i = 0; i < WARMUP; i++) {
    await step();
    await sync();
  }
  if (peer) await barrier();
  const computeMs: number[] = [];
  const now = (): number => performance.timeOrigin + performance.now();
  const startedAt = now();
  for (let i = 0; i < steps; i++) {
    const s = performance.now();
    await step();
    computeMs.push(performance.now() - s);
    await sync();
  }
  const endedAt = now();
  peer?.close();
  process.stdout.write(`${JSON.stringify({ startedAt, endedAt, computeMs } satisfies ChildResult)}\n`);
}

function runChild(mode: string, rank: number, port: number, steps: number): Promise<ChildResult> {
  return runJsonAsync<ChildResult>('node', ['--import', 'tsx', 'bench/lockstep.ts', '--child', mode, String(rank), String(port), String(steps)]);
}

const meanOf = (a: readonly number[]): number => a.reduce((n, t) => n + t, 0) / a.length;

async function solo(steps: number): Promise<{ samplesPerSec: number; computeMs: number }> {
  const r = await runChild('solo', 0, 0, steps);
  return { samplesPerSec: (steps * BATCH * 1000) / (r.endedAt - r.startedAt), computeMs: meanOf(r.computeMs) };
}

/** Both processes' samples over the span from the first start to the last end (no stretch where one runs alone counts double). */
async function pair(mode: 'free' | 'lockstep', steps: number): Promise<{ samplesPerSec: number; straggleMs: number; computeMs: number }> {
  const port = await freePort();
  const [a, b] = await Promise.all([runChild(mode, 0, port, steps), runChild(mode, 1, port, steps)]);
  const span = Math.max(a.endedAt, b.endedAt) - Math.min(a.startedAt, b.startedAt);
  // In lockstep, a step ends when the slower rank ends: the mean of the per-step maximum minus the mean compute.
  const maxMean = meanOf(slowerRank(a.computeMs, b.computeMs));
  const mean = (meanOf(a.computeMs) + meanOf(b.computeMs)) / 2;
  return { samplesPerSec: (2 * steps * BATCH * 1000) / span, straggleMs: maxMean - mean, computeMs: mean };
}

async function parent(): Promise<void> {
  const rounds = Number(flag('rounds', '5'));
  const steps = Number(flag('steps', '100'));
  const json = process.argv.includes('--json');
  // Over the whole timed span, like the pairs: the windows hold equal sample counts, so that is their harmonic mean
  // (`bench` itself reports their median).
  const ours = (workers: number): number => {
    const { windows } = runJson<{ windows: number[] }>('node', ['bin/mnist-ddp.js', 'bench', '--workers', String(workers), '--backend', 'wasm', '--model', 'cnn',
      '--batch-size', String(BATCH), '--steps', String(steps), '--windows', '5', '--warmup', String(WARMUP), '--json']);
    return windows.length / windows.reduce((n, w) => n + 1 / w, 0);
  };
  const rows: Array<{ solo: number; free: number; lockstep: number; straggleMs: number; ours1: number; ours2: number }> = [];
  for (let r = 0; r < rounds; r++) {
    const soloRun = await solo(steps);
    const freeRun = await pair('free', steps);
    const lock = await pair('lockstep', steps);
    const row = { solo: soloRun.samplesPerSec, free: freeRun.samplesPerSec, lockstep: lock.samplesPerSec, straggleMs: lock.straggleMs, ours1: ours(1), ours2: ours(2) };
    if (!json) console.log(`  mean compute ms/step: solo ${soloRun.computeMs.toFixed(1)}, free pair ${freeRun.computeMs.toFixed(1)}, lockstep pair ${lock.computeMs.toFixed(1)}; lockstep step ${(2 * BATCH * 1000 / lock.samplesPerSec).toFixed(1)} ms`);
    rows.push(row);
    if (!json) {
      console.log(`round ${r + 1}: solo ${row.solo.toFixed(0)}, free pair ${row.free.toFixed(0)} (${(row.free / row.solo).toFixed(2)}×), lockstep pair ${row.lockstep.toFixed(0)} ` +
        `(${(row.lockstep / row.solo).toFixed(2)}×, slower rank costs ${row.straggleMs.toFixed(1)} ms/step); mnist-ddp 1w ${row.ours1.toFixed(0)}, 2w ${row.ours2.toFixed(0)} (${(row.ours2 / row.ours1).toFixed(2)}×; ` +
        `2w / lockstep pair ${(row.ours2 / row.lockstep).toFixed(2)}) samples/s`);
    }
  }
  const m = (f: (x: (typeof rows)[number]) => number): number => roundTo(median(rows.map(f)), 2);
  const result = {
    rounds, steps, batchSize: BATCH,
    medianRoundRatio: {
      freePairOverSolo: m((x) => x.free / x.solo),
      lockstepPairOverSolo: m((x) => x.lockstep / x.solo),
      lockstepOverFree: m((x) => x.lockstep / x.free),
      mnistDdp2Over1: m((x) => x.ours2 / x.ours1),
      mnistDdp2OverLockstepPair: m((x) => x.ours2 / x.lockstep),
    },
    lockstepStraggleMsMedian: m((x) => x.straggleMs),
    samplesPerSecMedian: { solo: m((x) => x.solo), freePair: m((x) => x.free), lockstepPair: m((x) => x.lockstep), mnistDdp1: m((x) => x.ours1), mnistDdp2: m((x) => x.ours2) },
  };
  if (json) {
    console.log(JSON.stringify(result));
    return;
  }
  const q = result.medianRoundRatio;
  console.log(
    `medians of per-round ratios over ${rounds} rounds:\n` +
      `  free pair / solo ${q.freePairOverSolo}× (two processes on these cores)\n` +
      `  lockstep pair / solo ${q.lockstepPairOverSolo}× (any synchronous 2-worker trainer, no data exchanged; slower rank costs ${result.lockstepStraggleMsMedian} ms/step)\n` +
      `  mnist-ddp 2 workers / 1 worker ${q.mnistDdp2Over1}×; 2 workers / lockstep pair ${q.mnistDdp2OverLockstepPair}× (what the all-reduce and control plane add)`,
  );
}

const childAt = process.argv.indexOf('--child');
if (childAt >= 0) {
  const [mode, rank, port, steps] = process.argv.slice(childAt + 1);
  await child(mode as 'solo' | 'free' | 'lockstep', Number(rank), Number(port), Number(steps));
} else {
  await parent();
}
