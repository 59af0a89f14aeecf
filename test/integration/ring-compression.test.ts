import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/shared/core/backend.js';
import { isMnistDdpError, type MnistDdpError } from '../../src/shared/core/errors.js';
import { gatherBatch, loadMnist } from '../../src/shared/data/mnist.js';
import { rankSlice } from '../../src/shared/data/shard-plan.js';
import { Replica } from '../../src/shared/train/replica.js';
import { TrainStep, type AnomalyPolicy } from '../../src/shared/train/step.js';
import { UNIT_ROUNDOFF, type CompressMode, type HalfFormat } from '../../src/shared/wire/half-float.js';
import { RingAllReducer, type RingInbox } from '../../src/worker/ring/ring-allreduce.js';
import { randomFloats } from '../helpers/random.js';
import { connectRing, openInboxes, type Transport } from '../helpers/ring.js';

// Issue #16 item 5: --compress fp16|bf16 over real ZeroMQ rings. Gradients travel in 16 bits with error feedback;
// every rank ends bit-identical, the exact tail (statistics, loss, count, health) stays exact.

const reducers: RingAllReducer[] = [];
const inboxes: RingInbox[] = [];
afterEach(async () => {
  await Promise.all(reducers.splice(0).map((r) => r.close()));
  for (const i of inboxes.splice(0)) if (!i.socket.closed) i.socket.close();
});

function sameBits(a: Float32Array, b: Float32Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

/** All-reduces copies of `inputs` (one per rank) with the first `compressible` floats compressible. */
async function reduce(ring: RingAllReducer[], inputs: readonly Float32Array[], step: number, compressible: number): Promise<Float32Array[]> {
  return Promise.all(ring.map((r, rank) => r.allReduce(inputs[rank]!.slice(), step, { compressible })));
}

describe.each<[Transport, HalfFormat, number]>([
  ['tcp', 'bf16', 2], ['tcp', 'fp16', 3], ['ipc', 'fp16', 2], ['ipc', 'bf16', 3],
])('compressed ring over %s, %s, %i ranks', (transport, format, n) => {
  it('ends bit-identical on every rank, within 16-bit rounding of the exact sum, with the tail past the boundary exact', async () => {
    const chunkFloats = 1000;
    const ring = await connectRing(transport, n, reducers, { chunkBytes: 4 * chunkFloats, compress: format });
    // Chunks straddle the boundary: 9 876 is no multiple of the chunk or segment size.
    const length = 12_345;
    const compressible = 9_876;
    let previous = new Float64Array(length);
    for (let step = 1; step <= 3; step++) {
      const inputs = ring.map((_, rank) => randomFloats(length, 100 * step + rank, -50, 50));
      const results = await reduce(ring, inputs, step, compressible);
      for (const r of results) expect(sameBits(r, results[0]!)).toBe(true);
      const result = results[0]!;
      const magnitudes = new Float64Array(length);
      for (let i = 0; i < length; i++) {
        let sum = 0;
        for (const x of inputs) {
          sum += x[i]!;
          magnitudes[i] = magnitudes[i]! + Math.abs(x[i]!);
        }
        const magnitude = magnitudes[i]!;
        // Exact part: float32 rounding of n terms. Compressed part: one 16-bit rounding per rank that encodes this
        // float (initiator, forwarders, owner: n in all), plus the residuals the previous step left (as many, of
        // the previous step's values).
        const tolerance = i < compressible
          ? 1.01 * n * UNIT_ROUNDOFF[format] * (magnitude + previous[i]!) + n * 2 ** -24 * magnitude
          : n * 2 ** -24 * magnitude;
        if (!(Math.abs(result[i]! - sum) <= tolerance)) expect.fail(`step ${step}, float ${i}: ${result[i]} vs exact ${sum} (tolerance ${tolerance})`);
      }
      previous = magnitudes;
    }
  });

  it('tracks the true cumulative sum over many steps with error feedback; without it (residuals dropped each step) the error grows', async () => {
    const ring = await connectRing(transport, n, reducers, { compress: format });
    const length = 4096;
    // A fixed gradient per rank, with values that 16 bits round badly (and fp16 underflows entirely).
    const inputs = ring.map((_, rank) => randomFloats(length, 7 + rank, -1e-3, 1e-3).map((v, i) => (i % 64 === 0 ? 3e-9 : v)));
    const truth = new Float64Array(length);
    for (const x of inputs) for (let i = 0; i < length; i++) truth[i] = truth[i]! + x[i]!;

    const cumulativeError = async (steps: number, feedback: boolean, firstStep: number): Promise<number[]> => {
      const applied = new Float64Array(length);
      const errors: number[] = [];
      for (let s = 0; s < steps; s++) {
        const results = await reduce(ring, inputs, firstStep + s, length);
        if (!feedback) for (const r of ring) r.discardCarry();
        for (let i = 0; i < length; i++) applied[i] = applied[i]! + results[0]![i]!;
        let squared = 0;
        for (let i = 0; i < length; i++) squared += (applied[i]! - (s + 1) * truth[i]!) ** 2;
        errors.push(Math.sqrt(squared));
      }
      return errors;
    };
    const steps = 200;
    const withFeedback = await cumulativeError(steps, true, 1);
    for (const r of ring) r.discardCarry();
    const without = await cumulativeError(steps, false, steps + 1);

    let truthNorm = 0;
    for (const t of truth) truthNorm += t * t;
    truthNorm = Math.sqrt(truthNorm);
    // With feedback the cumulative error is what the ranks' residuals hold: bounded by a few roundings of one step's
    // sum, the same after 200 steps as after 20.
    const bound = 3 * n * UNIT_ROUNDOFF[format] * truthNorm;
    expect(Math.max(...withFeedback)).toBeLessThan(bound);
    expect(withFeedback[steps - 1]!).toBeLessThan(2 * Math.max(...withFeedback.slice(0, 20)));
    // Without it, the same rounding repeats every step: the error grows linearly.
    expect(without[steps - 1]!).toBeGreaterThan(0.5 * (steps / 20) * without[19]!);
    expect(without[steps - 1]!).toBeGreaterThan(10 * withFeedback[steps - 1]!);
    expect(ring[0]!.residualNorm()).toBe(0);
  });
});

describe('compressed ring: agreement and failures', () => {
  /** Ranks that each choose their own mode; resolves with each rank's outcome. */
  async function connectModes(modes: CompressMode[]): Promise<PromiseSettledResult<RingAllReducer>[]> {
    const opened = await openInboxes('tcp', modes.length);
    inboxes.push(...opened);
    const peers = opened.map((i) => i.endpoint);
    const results = await Promise.allSettled(opened.map((inbox, rank) =>
      RingAllReducer.connect({ rank, worldSize: modes.length, generation: 1, peers, timeoutMs: 10_000, compress: modes[rank] }, { inbox })));
    for (const r of results) if (r.status === 'fulfilled') reducers.push(r.value);
    return results;
  }

  it.each([[['none', 'bf16']], [['bf16', 'bf16', 'fp16']], [['fp16', 'none', 'fp16']]] as [CompressMode[]][])(
    'refuses at the handshake on every rank when the ranks disagree (%j), naming both modes', async (modes) => {
      const started = performance.now();
      const results = await connectModes(modes);
      // Well before the 10 s barrier deadline: the refusal is the handshake's, not a timeout.
      expect(performance.now() - started).toBeLessThan(5000);
      for (const r of results) {
        expect(r.status).toBe('rejected');
        const err = (r as PromiseRejectedResult).reason as MnistDdpError;
        expect(isMnistDdpError(err, 'HANDSHAKE_MISMATCH')).toBe(true);
        expect(err.message).toMatch(/sends gradients with --compress (none|fp16|bf16), rank \d with --compress (none|fp16|bf16)/);
        expect(err.details.theirs).not.toEqual(err.details.ours);
      }
    });

  describe('through the training step', () => {
    const silent = { warn: () => undefined } as unknown as NonNullable<AnomalyPolicy['log']>;
    beforeAll(async () => {
      await initBackend('wasm');
    });

    /** Two cnn replicas from one seed on a compressed ring; `poison` edits rank 1's gradient buffer. */
    async function pair(format: HalfFormat, poison?: (out: Float32Array) => void) {
      const ring = await connectRing('tcp', 2, reducers, { compress: format });
      const data = loadMnist();
      return Promise.all(ring.map(async (reducer, rank) => {
        const replica = await Replica.create({ model: 'cnn', seed: 5, optimizer: { name: 'sgd', momentum: 0.9, weightDecay: 0 } });
        if (rank === 1 && poison) {
          const honest = replica.computeGradients.bind(replica);
          replica.computeGradients = async (batch, out) => {
            await honest(batch, out);
            poison(out);
          };
        }
        const train = new TrainStep(replica, reducer, { onAnomaly: 'skip', anomalyFactor: 100, log: silent });
        return {
          replica,
          run: (s: number) => {
            const [start, end] = rankSlice(0, 32, rank, 2);
            const ids = Array.from({ length: 32 }, (_, i) => 1000 + 32 * s + i).slice(start, end);
            return train.run(gatherBatch(data.train.images, data.train.labels, ids), s, 0.05);
          },
        };
      }));
    }

    it.each<HalfFormat>(['fp16', 'bf16'])('%s: replicas stay bit-identical over steps, with loss and sample count exact', async (format) => {
      const ranks = await pair(format);
      for (const s of [0, 1, 2]) {
        const outcomes = await Promise.all(ranks.map((r) => r.run(s)));
        for (const o of outcomes) {
          expect(o.anomaly).toBeUndefined();
          expect(o.globalCount).toBe(32);
          expect(Number.isFinite(o.loss)).toBe(true);
        }
        expect(outcomes[0]!.loss).toBe(outcomes[1]!.loss);
      }
      expect(ranks[0]!.replica.digest()).toBe(ranks[1]!.replica.digest());
    });

    it.each<[HalfFormat, number]>([['fp16', NaN], ['fp16', Infinity], ['bf16', NaN], ['bf16', -Infinity]])(
      '%s: a %d gradient still fails with NON_FINITE_GRADIENT on every rank, applying nothing', async (format, bad) => {
        const ranks = await pair(format, (out) => (out[123] = bad));
        const before = ranks.map((r) => r.replica.digest());
        const results = await Promise.allSettled(ranks.map((r) => r.run(0)));
        for (const r of results) {
          expect(r.status).toBe('rejected');
          expect(isMnistDdpError((r as PromiseRejectedResult).reason, 'NON_FINITE_GRADIENT')).toBe(true);
        }
        expect(ranks.map((r) => r.replica.digest())).toEqual(before);
      });

    it('fp16: a finite gradient beyond 65504 saturates on the wire instead of failing the step', async () => {
      const ranks = await pair('fp16', (out) => (out[123] = 1e6));
      const outcomes = await Promise.all(ranks.map((r) => r.run(0)));
      for (const o of outcomes) expect(o.anomaly).toBeUndefined();
      expect(ranks[0]!.replica.digest()).toBe(ranks[1]!.replica.digest());
    });
  });
});
