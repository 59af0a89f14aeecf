import { Writable } from 'node:stream';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { BatchBalancer, REBALANCE_EVERY_STEPS } from '../../src/coordinator/balance.js';
import { Membership, type WorkerRecord } from '../../src/coordinator/membership.js';
import { PROTOCOL_VERSION } from '../../src/shared/wire/control-messages.js';
import type { BalanceMode } from '../../src/shared/data/shard-plan.js';
import { Rng } from '../../src/shared/data/rng.js';
import { maxShare, rankSlice } from '../../src/shared/data/shard-plan.js';

/**
 * The coordinator's batch balancer (issue #13, mixed rings): which shares it orders, when, and what it logs. Workers
 * are simulated by their compute time per sample, which is what their step reports measure.
 */
/** Worker records as admission makes them from hellos naming these devices (ids 0, 1, … in order). */
function workers(...devices: string[]): WorkerRecord[] {
  const members = new Membership();
  return devices.map((device, i) => members.add(`peer-${i}`, { type: 'hello', protocolVersion: PROTOCOL_VERSION, host: 'test', pid: 100 + i, instance: 0, metricsPort: 0, device }));
}

const at = (ws: readonly WorkerRecord[], ms: readonly number[]): Simulated[] => ws.map((worker, i) => ({ worker, ms: ms[i]! }));

function balancer(mode: BalanceMode, batchSize: number): { balancer: BatchBalancer; logs: Array<{ msg: string; shares?: Array<{ share: number }> }> } {
  const logs: Array<{ msg: string }> = [];
  const log = pino({ level: 'info' }, new Writable({ write(chunk: Buffer, _enc, done) { logs.push(JSON.parse(chunk.toString()) as { msg: string }); done(); } }));
  return { balancer: new BatchBalancer({ mode, batchSize, log }), logs };
}

interface Simulated {
  worker: WorkerRecord;
  /** ms of computeGradients per sample. */
  ms: number;
}

/**
 * Runs `steps` steps of one generation: orders each step's shares, lets every rank compute its share at its speed
 * (times `jitter()`), and records the reports. Returns the shares ordered at each step (undefined: equal split).
 */
function run(b: BatchBalancer, ring: readonly Simulated[], generation: number, firstStep: number, steps: number, batchSize: number, jitter: () => number = () => 1): Array<number[] | undefined> {
  const workers = ring.map((r) => r.worker);
  const count = ring.length * batchSize;
  const ordered: Array<number[] | undefined> = [];
  for (let step = firstStep; step < firstStep + steps; step++) {
    const shares = b.sharesFor(workers, generation, step, count);
    ordered.push(shares);
    const local = ring.map((_, rank) => shares?.[rank] ?? (([s, e]) => e - s)(rankSlice(0, count, rank, ring.length)));
    b.record(workers, ring.map((r, rank) => ({
      rank, loss: 1, globalCount: count, localCount: local[rank]!, computeMs: local[rank]! * r.ms * jitter(), allReduceMs: 1, applyMs: 1,
    })));
  }
  return ordered;
}

describe('BatchBalancer (issue #13)', () => {
  it('auto on a GPU + CPU ring: equal until both are measured, then shares by throughput that hold; the global batch is unchanged', () => {
    const { balancer: b, logs } = balancer('auto', 64);
    const ring = at(workers('wasm', 'webgpu on nvidia hopper (NVIDIA H200)'), [1, 0.1]);
    const ordered = run(b, ring, 1, 0, 40, 64);
    // Step 0 at each size is warm-up; three measured steps each, then the split follows the 1 : 10 speeds.
    expect(ordered.slice(0, 4)).toEqual([undefined, undefined, undefined, undefined]);
    expect(ordered[4]).toEqual([12, 116]);
    // Measured again at the new sizes, the split is already right: it does not move.
    expect(new Set(ordered.slice(4).map((s) => s!.join('/')))).toEqual(new Set(['12/116']));
    expect(logs.map((l) => l.msg)).toEqual([
      expect.stringMatching(/^generation 1: batch shares equal until every worker is measured \(--balance auto: the ring mixes devices\): rank 0 \(wasm\) 64, rank 1 \(webgpu on nvidia hopper \(NVIDIA H200\)\) 64$/),
      expect.stringMatching(/^generation 1, step 4: batch shares rebalanced by measured throughput .*: rank 0 \(wasm, 1000 samples\/s\) 12, rank 1 \(webgpu .*, 10000 samples\/s\) 116$/),
    ]);
  });

  it('auto on one kind of device keeps equal shares, even at different speeds; throughput balances them', () => {
    const ring = at(workers('wasm', 'wasm'), [1, 2]);
    const auto = balancer('auto', 64);
    expect(run(auto.balancer, ring, 1, 0, 50, 64).every((s) => s === undefined)).toBe(true);
    expect(auto.logs.map((l) => l.msg)).toEqual([expect.stringMatching(/^generation 1: batch shares equal \(--balance auto: one kind of device\)/)]);
    const throughput = balancer('throughput', 64);
    expect(run(throughput.balancer, ring, 1, 0, 50, 64).at(-1)).toEqual([85, 43]);
    const equal = balancer('equal', 64);
    const mixed = at(workers('wasm', 'webgpu'), [1, 0.1]);
    expect(run(equal.balancer, mixed, 1, 0, 50, 64).every((s) => s === undefined)).toBe(true);
  });

  it('measurement noise does not move the shares: a split is adopted only when it shortens the step by 5 %', () => {
    const { balancer: b, logs } = balancer('throughput', 64);
    const rng = new Rng(5);
    const ring = at(workers('wasm', 'wasm', 'wasm'), [1, 1, 1]);
    // ±2 % per step on identical workers.
    const ordered = run(b, ring, 1, 0, 200, 64, () => 0.98 + 0.04 * rng.nextFloat());
    expect(ordered.every((s) => s === undefined)).toBe(true);
    expect(logs).toHaveLength(1);
  });

  it('a new generation starts from its members\' measured speeds; a joiner counts as the median until measured', () => {
    const { balancer: b, logs } = balancer('auto', 32);
    const [cpu, gpu, joiner] = at(workers('wasm', 'webgpu', 'wasm'), [1, 0.25, 1]) as [Simulated, Simulated, Simulated];
    expect(run(b, [cpu, gpu], 1, 0, 10, 32).at(-1)).toEqual([13, 51]);
    // Generation 2 (rank order by worker id): the joiner counts as the median of 1 and 0.25 ms until measured …
    const second = run(b, [cpu, gpu, joiner], 2, 10, 30 + REBALANCE_EVERY_STEPS, 32);
    expect(second[0]).toEqual([15, 58, 23]);
    expect(logs[2]!.msg).toMatch(/^generation 2: batch shares by measured throughput/);
    // … and once measured it is treated as the CPU it is.
    expect(second.at(-1)).toEqual([16, 64, 16]);
    expect(second.every((s) => s!.reduce((a, c) => a + c, 0) === 96)).toBe(true);
  });

  it('caps the fastest rank at maxShare(batch size) and gives every rank at least one sample', () => {
    const { balancer: b } = balancer('throughput', 64);
    const ring = at(workers('webgpu', 'wasm', 'wasm', 'wasm', 'wasm'), [0.0001, 1, 1, 1, 1]);
    expect(run(b, ring, 1, 0, 10, 64).at(-1)).toEqual([maxShare(64), 16, 16, 16, 16]);
    const { balancer: slow } = balancer('throughput', 64);
    const lopsided = at(workers('wasm', 'webgpu'), [1000, 0.001]);
    expect(run(slow, lopsided, 1, 0, 10, 64).at(-1)).toEqual([1, 127]);
  });

  it('the short last step of an epoch keeps the generation\'s proportions', () => {
    const { balancer: b } = balancer('throughput', 64);
    const ring = at(workers('wasm', 'webgpu'), [1, 0.1]);
    run(b, ring, 1, 0, 10, 64);
    expect(b.sharesFor(ring.map((r) => r.worker), 1, 10, 128)).toEqual([12, 116]);
    expect(b.sharesFor(ring.map((r) => r.worker), 1, 11, 50)).toEqual([5, 45]);
  });
});
