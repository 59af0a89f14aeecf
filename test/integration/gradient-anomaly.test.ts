import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/shared/core/backend.js';
import { gatherBatch, loadMnist } from '../../src/shared/data/mnist.js';
import { rankSlice } from '../../src/shared/data/shard-plan.js';
import { Replica } from '../../src/shared/train/replica.js';
import { TrainStep, type AnomalyPolicy, type StepOutcome } from '../../src/shared/train/step.js';
import type { RingAllReducer } from '../../src/worker/ring/ring-allreduce.js';
import { connectRing } from '../helpers/ring.js';

// Issue #15 item 5, figure "An admitted worker that sends 1e30 gradients is named and the run does not silently
// finish at chance accuracy": over real ZeroMQ sockets, one rank of three scales its gradients by 1e30.

const WORLD = 3;
const BAD_RANK = 1;
const SAMPLES = 48;
const LR = 0.05;
const reducers: RingAllReducer[] = [];
afterEach(async () => {
  await Promise.all(reducers.splice(0).map((r) => r.close()));
});

const silent = { warn: () => undefined } as unknown as NonNullable<AnomalyPolicy['log']>;

/** Three replicas from the same seed on one ring; `poisoned(step)` makes BAD_RANK send gradients × 1e30 at that step. */
async function ranks(policy: Omit<AnomalyPolicy, 'log'>, poisoned: (step: number) => boolean) {
  const ring = await connectRing('tcp', WORLD, reducers);
  return Promise.all(ring.map(async (reducer, rank) => {
    const replica = await Replica.create({ model: 'cnn', seed: 5, optimizer: { name: 'sgd', momentum: 0.9, weightDecay: 0 } });
    let step = -1;
    if (rank === BAD_RANK) {
      const honest = replica.computeGradients.bind(replica);
      replica.computeGradients = async (batch, out) => {
        await honest(batch, out);
        if (poisoned(step)) for (let i = 0; i < replica.layout.paramCount; i++) out[i] = out[i]! * 1e30;
      };
    }
    const train = new TrainStep(replica, reducer, { ...policy, log: silent });
    const data = loadMnist();
    return {
      replica,
      run: (s: number): Promise<StepOutcome> => {
        step = s;
        const ids = Array.from({ length: SAMPLES }, (_, i) => 3000 + s * SAMPLES + i);
        const [start, end] = rankSlice(0, SAMPLES, rank, WORLD);
        return train.run(gatherBatch(data.train.images, data.train.labels, ids.slice(start, end)), s, LR);
      },
    };
  }));
}

describe('gradient sanity across ranks', () => {
  beforeAll(async () => {
    await initBackend('wasm');
  });

  it('names the rank sending 1e30 gradients and skips that step on every rank: replicas equal the run without it', async () => {
    const attacked = await ranks({ onAnomaly: 'skip', anomalyFactor: 100 }, (s) => s === 1);
    const outcomes: StepOutcome[][] = [];
    for (const s of [0, 1, 2]) outcomes.push(await Promise.all(attacked.map((r) => r.run(s))));
    for (const s of [0, 2]) for (const o of outcomes[s]!) expect(o.anomaly, `step ${s}`).toBeUndefined();
    for (const o of outcomes[1]!) {
      expect(o.anomaly?.ranks).toEqual([BAD_RANK]);
      expect(o.anomaly?.reasons[0]).toMatch(/^rank 1 has a gradient norm per sample of .*x the median/);
      expect(o.globalCount).toBe(SAMPLES);
    }
    const digests = attacked.map((r) => r.replica.digest());
    expect(new Set(digests).size).toBe(1);

    const clean = await ranks({ onAnomaly: 'skip', anomalyFactor: 100 }, () => false);
    for (const s of [0, 2]) for (const o of await Promise.all(clean.map((r) => r.run(s)))) expect(o.anomaly).toBeUndefined();
    expect(clean.map((r) => r.replica.digest())).toEqual(digests);
    // And the skipped step did change something when applied: the check is not vacuous.
    const untouched = await Replica.create({ model: 'cnn', seed: 5, optimizer: { name: 'sgd', momentum: 0.9, weightDecay: 0 } });
    expect(untouched.digest()).not.toBe(digests[0]);
  });

  it('fails with GRADIENT_ANOMALY naming the rank on every rank with --on-anomaly fail, applying nothing', async () => {
    const group = await ranks({ onAnomaly: 'fail', anomalyFactor: 100 }, (s) => s === 0);
    const before = group[0]!.replica.digest();
    const results = await Promise.allSettled(group.map((r) => r.run(0)));
    for (const result of results) {
      expect(result.status).toBe('rejected');
      const err = (result as PromiseRejectedResult).reason as { code: string; message: string; details: { ranks: number[] } };
      expect(err.code).toBe('GRADIENT_ANOMALY');
      expect(err.details.ranks).toEqual([BAD_RANK]);
      expect(err.message).toMatch(/anomalous gradients from rank 1: rank 1 has a gradient norm/);
    }
    expect(group.map((r) => r.replica.digest())).toEqual([before, before, before]);
  });
});
