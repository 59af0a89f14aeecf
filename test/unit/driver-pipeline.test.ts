import type { RecoveryOutcome } from '../../src/coordinator/recovery-machine.js';
import { describe, expect, it } from 'vitest';
import { runTraining, type StepEvent, type StepOrder, type StepResult, type TrainOutcome, type WorkerGroup } from '../../src/coordinator/driver.js';
import { trainConfigSchema } from '../../src/shared/core/config.js';
import type { DatasetPlan } from '../../src/shared/data/dataset-plan.js';
import { MnistDdpError } from '../../src/shared/core/errors.js';

// The driver's scheduling, on a scripted WorkerGroup (the driver is the unit under test; real worker groups are
// covered by the e2e tests): how many orders are in flight, when the pipeline drains, and which steps are ordered
// again after a recoverable failure. The group simulates a replica: it records which orders were applied, so
// "exactly once" is checked against what was applied, not against the driver's own bookkeeping.

interface Script {
  /** The failure is the coordinator's (a deadline): the replica goes on and runs the orders queued behind it. */
  laterStepsRun?: boolean;
  /** This step's order fails in generation 1 (a lost peer) without being applied... */
  failStep?: number;
  /** ...or after being applied on every survivor (the peer died after the all-reduce). */
  appliedBeforeFailing?: boolean;
  /** A failure that is not recoverable. */
  fatal?: boolean;
}

class ScriptedGroup implements WorkerGroup {
  worldSize = 2;
  generation = 1;
  inFlight = 0;
  maxInFlight = 0;
  orders: StepOrder[] = [];
  /** Every order the simulated replica applied, in order. */
  applied: StepOrder[] = [];
  changePending = false;
  boundaries = 0;
  private brokenGeneration = -1;
  private pending: Array<() => void> = [];
  private idleWaiters: Array<() => void> = [];

  constructor(readonly pipelineDepth: number, private readonly script: Script = {}) {}

  runStep(order: StepOrder): Promise<StepResult> {
    this.orders.push(order);
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    const generation = this.generation;
    return new Promise((resolve, reject) => {
      this.pending.push(() => {
        this.inFlight--;
        if (this.inFlight === 0) for (const wake of this.idleWaiters.splice(0)) wake();
        // Like a worker: orders queued behind a failed step of the same generation are dropped, not run.
        if (generation === this.brokenGeneration) return reject(new MnistDdpError('STEP_ABORTED', `step ${order.step} dropped`));
        if (order.step === this.script.failStep && generation === 1) {
          if (!this.script.laterStepsRun) this.brokenGeneration = generation;
          if (this.script.appliedBeforeFailing) this.applied.push(order);
          return reject(new MnistDdpError('PEER_LOST', 'rank 1 vanished', { recoverable: !this.script.fatal }));
        }
        this.applied.push(order);
        resolve({ loss: 1 / (order.step + 1), reports: [] });
      });
      // Settle asynchronously, oldest first, like workers finishing steps in order.
      setTimeout(() => this.pending.shift()?.(), 1);
    });
  }

  /** Resolves when no order is in flight (each settled, resolved or rejected); rejects after `deadlineMs`. */
  whenIdle(deadlineMs = 5_000): Promise<void> {
    if (this.inFlight === 0) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${this.inFlight} orders still in flight after ${deadlineMs} ms`)), deadlineMs);
      this.idleWaiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  membershipChangePending(): boolean {
    return this.changePending;
  }

  async beforeStep(): Promise<void> {
    expect(this.inFlight).toBe(0);
    this.boundaries++;
    this.changePending = false;
  }

  async recover(): Promise<RecoveryOutcome> {
    expect(this.inFlight).toBe(0);
    this.generation = 2;
    this.worldSize = 1;
    return { appliedStep: this.applied.at(-1)?.step ?? -1, generation: 2, seconds: 0, detectSeconds: 0, path: ['detect', 'drop', 'join', 'snapshot', 'ring-set-up', 'state-transfer', 'ready'] };
  }

  async evaluate(): Promise<never> {
    throw new Error('no validation in these tests');
  }

  async snapshot(): Promise<never> {
    throw new Error('unused');
  }

  async close(): Promise<void> {}
}

const plan = (train: number): DatasetPlan => ({ train: new Int32Array(train), validation: new Int32Array(0), test: new Int32Array(0) }) as unknown as DatasetPlan;
const config = trainConfigSchema.parse({ epochs: 2, batchSize: 10, validationSize: 0, warmupSteps: 0, schedule: 'constant' });
/** 5 steps per epoch with 2 ranks × batch 10, 10 with 1 rank. */
const TRAIN = 100;

async function run(group: ScriptedGroup, overrides: Partial<typeof config> = {}): Promise<{ events: StepEvent[]; outcome: TrainOutcome }> {
  const events: StepEvent[] = [];
  const outcome = await runTraining({ ...config, ...overrides }, group, plan(TRAIN), { epoch: 0, cursor: 0, globalStep: 0 }, { onStep: (e) => events.push(e) });
  return { events, outcome };
}

/** What the replica applied tiles every epoch [0, TRAIN) in order, once; the committed events say the same. */
function expectAppliedExactlyOnce(group: ScriptedGroup, events: StepEvent[], epochs = config.epochs): void {
  for (let epoch = 0; epoch < epochs; epoch++) {
    let cursor = 0;
    for (const o of group.applied.filter((a) => a.epoch === epoch)) {
      expect(o.cursor, `epoch ${epoch} step ${o.step}`).toBe(cursor);
      cursor += o.count;
    }
    expect(cursor, `epoch ${epoch}`).toBe(TRAIN);
  }
  expect(group.applied.map((o) => o.step)).toEqual(group.applied.map((_, i) => i));
  expect(events.map((e) => e.step)).toEqual(group.applied.map((o) => o.step + 1));
  expect(events.map((e) => e.cursor - e.globalCount)).toEqual(group.applied.map((o) => o.cursor));
}

describe('training driver: pipelined step orders', () => {
  it('keeps up to pipelineDepth orders in flight and applies every step once, in order', async () => {
    const group = new ScriptedGroup(2);
    const { events } = await run(group);
    expect(group.maxInFlight).toBe(2);
    expectAppliedExactlyOnce(group, events);
    expect(events.map((e) => e.loss)).toEqual(events.map((e) => 1 / e.step));
  });

  it('orders strictly one at a time when the group says pipelineDepth 1', async () => {
    const group = new ScriptedGroup(1);
    await run(group);
    expect(group.maxInFlight).toBe(1);
  });

  it('drains the pipeline before a membership change', async () => {
    const group = new ScriptedGroup(2);
    const events: StepEvent[] = [];
    await runTraining(config, group, plan(TRAIN), { epoch: 0, cursor: 0, globalStep: 0 }, {
      onStep: (e) => {
        events.push(e);
        if (e.step === 3) group.changePending = true;
      },
    });
    expect(group.boundaries).toBe(1);
    expectAppliedExactlyOnce(group, events);
  });

  it('stops at maxSteps with nothing in flight and a resumable position', async () => {
    const group = new ScriptedGroup(2);
    const { events, outcome } = await run(group, { maxSteps: 7 });
    expect(group.orders).toHaveLength(7);
    expect(events).toHaveLength(7);
    expect(outcome.stoppedEarly).toBe(true);
    expect(outcome.position).toEqual({ epoch: 1, cursor: 40, globalStep: 7 });
  });

  it('after a lost peer, re-orders the failed step and the one queued behind it, each applied once', async () => {
    const group = new ScriptedGroup(2, { failStep: 2 });
    const { events } = await run(group);
    expectAppliedExactlyOnce(group, events);
    const steps2and3 = group.orders.filter((o) => o.step === 2 || o.step === 3);
    expect(steps2and3.map((o) => o.step)).toEqual([2, 3, 2, 3]);
    expect(steps2and3[2]!.cursor).toBe(steps2and3[0]!.cursor);
    // Steps are recorded in the world they ran in: the re-formed, 1-rank generation 2 after the failure.
    expect(events.slice(0, 2).every((e) => e.worldSize === 2 && e.generation === 1)).toBe(true);
    expect(events.slice(2).every((e) => e.worldSize === 1 && e.generation === 2)).toBe(true);
  });

  it('commits a failed step that every survivor had already applied, recorded in the world it ran in, without redoing it', async () => {
    const group = new ScriptedGroup(2, { failStep: 2, appliedBeforeFailing: true });
    const { events } = await run(group);
    expectAppliedExactlyOnce(group, events);
    expect(group.orders.filter((o) => o.step === 2)).toHaveLength(1);
    const committed = events.find((e) => e.step === 3)!;
    expect(Number.isNaN(committed.loss)).toBe(true);
    expect([committed.worldSize, committed.generation]).toEqual([2, 1]);
  });

  it('after a failure the replica outlived, commits the steps it applied with the results that arrived', async () => {
    const group = new ScriptedGroup(2, { failStep: 2, appliedBeforeFailing: true, laterStepsRun: true });
    const { events } = await run(group);
    expectAppliedExactlyOnce(group, events);
    expect(group.orders.filter((o) => o.step === 2 || o.step === 3)).toHaveLength(2);
    // Step 3 (event 3) failed without a result; step 4, queued behind it, arrived and keeps its loss.
    expect(Number.isNaN(events[2]!.loss)).toBe(true);
    expect(events[3]!.loss).toBe(1 / 4);
    // Steps committed together still get a throughput measured over time (was millions or Infinity samples/s).
    for (const e of events) expect(e.samplesPerSec, `step ${e.step}`).toBeLessThan(1e6);
  });

  it('fails the run on a fatal error with an order still in flight (and leaves no unhandled rejection)', async () => {
    const group = new ScriptedGroup(2, { failStep: 2, fatal: true });
    await expect(run(group)).rejects.toMatchObject({ code: 'PEER_LOST' });
    await group.whenIdle();
    expect(group.inFlight).toBe(0);
  });
});

describe('training driver: learning rate under --lr-scaling linear when the world changes (issue #13)', () => {
  /** A group whose membership change at a step boundary admits a third rank. */
  class GrowingGroup extends ScriptedGroup {
    override async beforeStep(): Promise<void> {
      await super.beforeStep();
      this.worldSize = 3;
      this.generation++;
    }
  }

  // lr 1/16 is meant for a global batch of 20 = 2 ranks × 10: the peak is 1/32 per rank in the world.
  const scaled = { lrScaling: 'linear' as const, lrReferenceBatch: 20, lr: 0.0625, warmupSteps: 8 };
  const expectedLr = (e: StepEvent): number => (0.03125 * e.worldSize) * Math.min(1, e.step / 8);

  it('gives every step the peak of the world that runs it, warm-up going on across the change', async () => {
    // One order at a time, so the change falls exactly after step 3.
    const group = new GrowingGroup(1);
    const events: StepEvent[] = [];
    await runTraining({ ...config, ...scaled }, group, plan(TRAIN), { epoch: 0, cursor: 0, globalStep: 0 }, {
      onStep: (e) => {
        events.push(e);
        if (e.step === 3) group.changePending = true;
      },
    });
    expectAppliedExactlyOnce(group, events);
    expect(events.slice(0, 3).every((e) => e.worldSize === 2)).toBe(true);
    expect(events.slice(3).every((e) => e.worldSize === 3)).toBe(true);
    for (const e of events) expect(e.lr, `step ${e.step} in a world of ${e.worldSize}`).toBe(expectedLr(e));
    // Step 4 (the first of 3 ranks) is still warming up: 4/8 of the 3-rank peak 3/32.
    expect(events[3]!.lr).toBe(0.046875);
  });

  it('re-orders a step lost with a rank at the smaller world\'s lr', async () => {
    const group = new ScriptedGroup(2, { failStep: 2 });
    const { events } = await run(group, scaled);
    expectAppliedExactlyOnce(group, events);
    for (const e of events) expect(e.lr, `step ${e.step} in a world of ${e.worldSize}`).toBe(expectedLr(e));
    // Step 2 was ordered for 2 ranks (3/8 of 1/16), then again for the 1 rank left (3/8 of 1/32).
    expect(group.orders.filter((o) => o.step === 2).map((o) => o.lr)).toEqual([0.0234375, 0.01171875]);
  });
});
