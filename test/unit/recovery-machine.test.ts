import { describe, expect, it } from 'vitest';
import { MnistDdpError } from '../../src/shared/core/errors.js';
import { componentLogger } from '../../src/shared/core/log.js';
import { Membership, type WorkerRecord } from '../../src/coordinator/membership.js';
import { nextState, runRecovery, TRANSITIONS, type RecoveryActions } from '../../src/coordinator/recovery-machine.js';
import type { RankState } from '../../src/coordinator/state-transfer.js';

// Issue #14: recovery is one state machine; a member lost in any of its states re-plans with the members still alive,
// an empty survivor list restores the latest checkpoint, and only "fewer than --min-workers left, not enough joined in
// time" fails the run.

const log = componentLogger('test');
const state = (appliedStep: number): RankState => ({ snapshot: { weights: new Float32Array(1), optimizer: { name: 'sgd', step: 0, slots: [] } }, appliedStep });

function ring(n: number): Membership {
  const members = new Membership();
  for (let i = 0; i < n; i++) {
    const w = members.add(`peer${i}`, { type: 'hello', protocolVersion: 4, host: 'test', pid: i, instance: 0, metricsPort: 0 });
    w.status = 'admitted';
  }
  members.activate(members.beginGeneration());
  return members;
}

function actions(members: Membership, overrides: Partial<RecoveryActions> = {}): RecoveryActions & { gone: number[] } {
  const gone: number[] = [];
  return {
    gone, members, log, heartbeatTimeoutMs: 1000, rejoinTimeoutMs: 300,
    declareGone: (w, _why) => {
      w.status = 'gone';
      gone.push(w.id);
    },
    release: (w) => (w.status = 'gone'),
    membershipChanged: (deadline) => new Promise((r) => setTimeout(r, Math.max(0, deadline - Date.now()))),
    snapshotFrom: async (w) => state(10 + w.id),
    formRing: async () => members.activate(members.beginGeneration()),
    load: async () => undefined,
    restorePoint: () => ({ state: state(4), position: { epoch: 0, cursor: 320, globalStep: 5 } }),
    ...overrides,
  };
}

describe('recovery state machine', () => {
  it('has its transitions in one table: a member lost while re-forming goes back to drop', () => {
    for (const s of ['snapshot', 'ring-set-up', 'state-transfer'] as const) expect(nextState(s, 'member-lost')).toBe('drop');
    expect(nextState('join', 'no-quorum')).toBe('failed');
    expect(() => nextState('detect', 'member-lost')).toThrow(/no transition/);
    expect(Object.keys(TRANSITIONS)).toEqual(['detect', 'drop', 'join', 'snapshot', 'ring-set-up', 'state-transfer', 'ready', 'failed']);
  });

  it('re-plans with the survivors when a member dies during the snapshot', async () => {
    const members = ring(3);
    const asked: number[] = [];
    const act = actions(members, {
      snapshotFrom: async (w: WorkerRecord) => {
        asked.push(w.id);
        if (asked.length === 1) {
          w.status = 'gone';
          throw new MnistDdpError('PEER_LOST', `snapshot: rank ${w.rank} is gone`, { recoverable: true });
        }
        return state(7);
      },
    });
    const outcome = await runRecovery({ cause: 'membership', runPhase: 'join' }, act);
    expect(outcome.path).toEqual(['drop', 'join', 'snapshot', 'drop', 'join', 'snapshot', 'ring-set-up', 'state-transfer', 'ready']);
    expect(asked).toEqual([0, 1]);
    expect(members.active.map((w) => w.id)).toEqual([1, 2]);
    expect(outcome.appliedStep).toBe(7);
    expect(outcome.restoredFrom).toBeUndefined();
  });

  it('restores the latest checkpoint onto joiners when no survivor holds the state', async () => {
    const members = ring(2);
    for (const w of members.active) w.status = 'gone';
    const joiner = members.add('peer9', { type: 'hello', protocolVersion: 4, host: 'test', pid: 9, instance: 0, metricsPort: 0 });
    joiner.status = 'admitted';
    const outcome = await runRecovery({ cause: 'failure', runPhase: 'evaluation', failedStep: 12 }, actions(members));
    expect(outcome.restoredFrom).toEqual({ epoch: 0, cursor: 320, globalStep: 5 });
    expect(outcome.appliedStep).toBe(4);
    expect(members.active.map((w) => w.id)).toEqual([joiner.id]);
  });

  it('waits for a joiner when nobody is left, and fails at the rejoin deadline naming it', async () => {
    const members = ring(1);
    members.active[0]!.status = 'gone';
    const t0 = Date.now();
    await expect(runRecovery({ cause: 'failure', runPhase: 'step', failedStep: 3 }, actions(members))).rejects.toThrow(/every worker is gone.*not enough joined within 300 ms/);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(290);
  });

  it('below --min-workers after a loss, waits for a joiner, admits it and re-forms with the minimum', async () => {
    const members = ring(3);
    const changed = new Set<() => void>();
    const act = actions(members, {
      minWorkers: 3, rejoinTimeoutMs: 5000,
      membershipChanged: (deadline) => new Promise<void>((resolve) => {
        const done = (): void => {
          clearTimeout(timer);
          changed.delete(done);
          resolve();
        };
        const timer = setTimeout(done, Math.max(0, deadline - Date.now()));
        changed.add(done);
      }),
    });
    members.active[1]!.lastSeen = 0; // silent: dropped in `drop`
    let joiner: WorkerRecord | undefined;
    setTimeout(() => {
      joiner = members.add('peer9', { type: 'hello', protocolVersion: 4, host: 'test', pid: 9, instance: 0, metricsPort: 0 });
      joiner.status = 'admitted';
      for (const f of [...changed]) f();
    }, 150);
    const t0 = Date.now();
    const outcome = await runRecovery({ cause: 'failure', runPhase: 'step', failedStep: 3 }, act);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(140);
    expect(Date.now() - t0).toBeLessThan(4000);
    expect(act.gone).toEqual([1]);
    expect(outcome.path).toEqual(['detect', 'drop', 'join', 'snapshot', 'ring-set-up', 'state-transfer', 'ready']);
    expect(members.active.map((w) => w.id)).toEqual([0, 2, joiner!.id]);
    // The survivors still hold the state: the one that applied fewest steps, not a checkpoint.
    expect(outcome.appliedStep).toBe(10);
    expect(outcome.restoredFrom).toBeUndefined();
  });

  it('drops a member silent for half the heartbeat timeout, but not one that is evaluating (silent between batches by design)', async () => {
    const members = ring(3);
    const now = Date.now();
    // Both have been silent for 600 ms of the 1000 ms timeout; the one evaluating stays.
    members.active[1]!.lastSeen = now - 600;
    members.active[2]!.lastSeen = now - 600;
    members.active[2]!.evaluating = true;
    const act = actions(members);
    const outcome = await runRecovery({ cause: 'failure', runPhase: 'evaluation', failedStep: 3 }, act);
    expect(act.gone).toEqual([1]);
    expect(members.active.map((w) => w.id)).toEqual([0, 2]);
    expect(outcome.path.at(-1)).toBe('ready');
  });

  it('below --min-workers at a step boundary (a leaver), fails at the rejoin deadline naming the minimum, the remaining and the deadline', async () => {
    const members = ring(3);
    members.active[2]!.leaving = true;
    const t0 = Date.now();
    const err = await runRecovery({ cause: 'membership', runPhase: 'join' }, actions(members, { minWorkers: 3, rejoinTimeoutMs: 200 })).then(() => undefined, (e: unknown) => e);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(190);
    expect(err).toBeInstanceOf(MnistDdpError);
    const e = err as MnistDdpError;
    expect(e.code).toBe('PEER_LOST');
    expect(e.message).toMatch(/only 2 worker\(s\) remain, fewer than --min-workers 3, and not enough joined within 200 ms \(--rejoin-timeout-ms, deadline \d{4}-/);
    expect(e.details).toMatchObject({ minWorkers: 3, remaining: 2, rejoinTimeoutMs: 200 });
    expect(typeof e.details.deadline).toBe('string');
  });

  it('at or above --min-workers goes on without waiting', async () => {
    const members = ring(3);
    members.active[2]!.leaving = true;
    const t0 = Date.now();
    const outcome = await runRecovery({ cause: 'membership', runPhase: 'join' }, actions(members, { minWorkers: 2, rejoinTimeoutMs: 5000 }));
    expect(Date.now() - t0).toBeLessThan(1000);
    expect(members.active).toHaveLength(2);
    expect(outcome.path.at(-1)).toBe('ready');
  });

  it('with no rejoin wait (--no-elastic) fails at once below the minimum', async () => {
    const members = ring(2);
    members.active[1]!.status = 'gone';
    const t0 = Date.now();
    await expect(runRecovery({ cause: 'membership', runPhase: 'join' }, actions(members, { minWorkers: 2, rejoinTimeoutMs: 0 }))).rejects.toMatchObject({ code: 'PEER_LOST', details: { minWorkers: 2, remaining: 1 } });
    expect(Date.now() - t0).toBeLessThan(100);
  });
});
