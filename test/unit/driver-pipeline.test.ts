import { describe, expect, it } from 'vitest';
import { runTraining, type StepEvent, type StepResult, type WorkerGroup } from '../../src/coordinator/driver.js';
import { trainConfigSchema } from '../../src/shared/config.js';
import type { DatasetPlan } from '../../src/shared/dataset-plan.js';
import { MnistDdpError } from '../../src/shared/errors.js';
import type { StepPlan } from '../../src/worker/worker-core.js';

// The driver's scheduling, on a scripted WorkerGroup (the driver is the unit under test; real worker groups are
// covered by the e2e tests): how many orders are in flight, when the pipeline drains, and which steps are ordered
// again after a recoverable failure.

type Order = Omit<StepPlan, 'generation'>;

class ScriptedGroup implements WorkerGroup {
  worldSize = 2;
  generation = 1;
  inFlight = 0;
  maxInFlight = 0;
  orders: Order[] = [];
  changePending = false;
  boundaries = 0;
  private pending: Array<{ order: Order; settle: () => void }> = [];

  constructor(readonly pipelineDepth: number, private readonly script: { failStep?: number; applied?: number } = {}) {}

  runStep(order: Order): Promise<StepResult> {
    this.orders.push(order);
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    return new Promise((resolve, reject) => {
      this.pending.push({
        order,
        settle: () => {
          this.inFlight--;
          if (order.step === this.script.failStep && this.generation === 1) reject(new MnistDdpError('PEER_LOST', 'rank 1 vanished', { recoverable: true }));
          else resolve({ loss: 1 / (order.step + 1), globalCount: order.count, reports: [] });
        },
      });
      // Settle asynchronously, oldest first, like workers finishing steps in order.
      setTimeout(() => this.pending.shift()?.settle(), 1);
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

  async recover(step: number): Promise<number> {
    expect(this.inFlight).toBe(0);
    this.generation = 2;
    this.worldSize = 1;
    return this.script.applied ?? step - 1;
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

async function run(group: ScriptedGroup, train = 100): Promise<StepEvent[]> {
  const events: StepEvent[] = [];
  await runTraining(config, group, plan(train), { epoch: 0, cursor: 0, globalStep: 0 }, { onStep: (e) => events.push(e) });
  return events;
}

/** Committed steps must tile each epoch [0, train) in order, numbered 1, 2, 3, … */
function expectExactlyOnce(events: StepEvent[], train: number): void {
  let cursor = 0;
  events.forEach((e, i) => {
    expect(e.step).toBe(i + 1);
    cursor = cursor === train ? 0 : cursor;
    expect(e.cursor - e.globalCount).toBe(cursor);
    cursor = e.cursor;
  });
  expect(events.reduce((n, e) => n + e.globalCount, 0)).toBe(config.epochs * train);
}

describe('training driver: pipelined step orders', () => {
  it('keeps up to pipelineDepth orders in flight and commits every step once, in order', async () => {
    const group = new ScriptedGroup(2);
    const events = await run(group);
    expect(group.maxInFlight).toBe(2);
    expectExactlyOnce(events, 100);
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
    await runTraining(config, group, plan(100), { epoch: 0, cursor: 0, globalStep: 0 }, {
      onStep: (e) => {
        events.push(e);
        if (e.step === 3) group.changePending = true;
      },
    });
    expect(group.boundaries).toBe(1);
    expectExactlyOnce(events, 100);
  });

  it('after a recoverable failure, re-orders the failed step and the one queued behind it from the same cursors', async () => {
    const group = new ScriptedGroup(2, { failStep: 4 });
    const events = await run(group);
    expectExactlyOnce(events, 100);
    const failed = group.orders.filter((o) => o.step === 4);
    expect(failed).toHaveLength(2);
    expect(failed[1]!.cursor).toBe(failed[0]!.cursor);
    // Whatever was queued behind the failed step is ordered again too: each step's last order starts where the
    // previous step's last order ended.
    const last = new Map(group.orders.map((o) => [o.step, o]));
    for (let step = 1; step < last.size; step++) {
      const prev = last.get(step - 1)!;
      if (last.get(step)!.epoch === prev.epoch) expect(last.get(step)!.cursor).toBe(prev.cursor + prev.count);
    }
    // Steps after the recovery run in the re-formed (1-rank) world.
    expect(events.find((e) => e.step === 5)!.worldSize).toBe(1);
  });

  it('commits a failed step that every survivor had already applied, without ordering it again', async () => {
    const group = new ScriptedGroup(2, { failStep: 4, applied: 4 });
    const events = await run(group);
    expectExactlyOnce(events, 100);
    expect(group.orders.filter((o) => o.step === 4)).toHaveLength(1);
    expect(Number.isNaN(events.find((e) => e.step === 5)!.loss)).toBe(true);
  });
});
