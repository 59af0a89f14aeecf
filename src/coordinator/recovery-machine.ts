import { isMnistDdpError, MnistDdpError } from '../shared/core/errors.js';
import type { Logger } from '../shared/core/log.js';
import type { TrainingPosition } from './checkpoints.js';
import { firstSilentWorker, isSilent } from './liveness.js';
import type { Membership, WorkerRecord } from './membership.js';
import type { RankState } from './state-transfer.js';

/**
 * Recovery as an explicit state machine (issue #14). Whatever the run was doing when its membership changed (join,
 * ring set-up, snapshot, state transfer, step, evaluation, checkpoint), the group re-plans from `detect` or `drop`
 * and walks the table below; a member lost in any state goes back to `drop` and re-plans with the members still
 * alive. Every transition is in TRANSITIONS, so the machine can be read (and tested) in one place:
 *
 *   detect ──settled──▶ drop ──dropped──▶ join ──quorum──▶ snapshot ──state-taken──▶ ring-set-up
 *   ring-set-up ──ring-formed──▶ state-transfer ──state-loaded──▶ ready
 *   snapshot | ring-set-up | state-transfer ──member-lost──▶ drop
 *   join ──no-quorum──▶ failed   (fewer than --min-workers left and not enough joiners within the rejoin deadline)
 *
 * `join` is where the quorum rule lives: with fewer than `minWorkers` admitted (after a loss, or at a step boundary
 * after a leave), the machine waits up to `rejoinTimeoutMs` for joiners, admitting them as they come, and goes on
 * as soon as `minWorkers` are back; at the deadline, still short, the run fails (PEER_LOST naming the minimum, how
 * many remain and the deadline).
 */
export const RECOVERY_STATES = ['detect', 'drop', 'join', 'snapshot', 'ring-set-up', 'state-transfer', 'ready', 'failed'] as const;
export type RecoveryState = (typeof RECOVERY_STATES)[number];
export type RecoveryEvent = 'settled' | 'dropped' | 'quorum' | 'no-quorum' | 'state-taken' | 'ring-formed' | 'state-loaded' | 'member-lost';

export const TRANSITIONS: Readonly<Record<RecoveryState, Partial<Record<RecoveryEvent, RecoveryState>>>> = {
  detect: { settled: 'drop' },
  drop: { dropped: 'join' },
  join: { quorum: 'snapshot', 'no-quorum': 'failed' },
  snapshot: { 'state-taken': 'ring-set-up', 'member-lost': 'drop' },
  'ring-set-up': { 'ring-formed': 'state-transfer', 'member-lost': 'drop' },
  'state-transfer': { 'state-loaded': 'ready', 'member-lost': 'drop' },
  ready: {},
  failed: {},
};

export function nextState(state: RecoveryState, event: RecoveryEvent): RecoveryState {
  const next = TRANSITIONS[state][event];
  if (!next) throw new MnistDdpError('INVARIANT_VIOLATED', `recovery: no transition from '${state}' on '${event}'`, { state, event });
  return next;
}

/** Why the machine runs: a failure (wait to see who is gone), a membership change at a quiet point, or start-up. */
export type RecoveryCause = 'failure' | 'membership' | 'start';

export interface RecoveryTrigger {
  cause: RecoveryCause;
  /** What the run was doing: join, step, evaluation, checkpoint (for the log of survived failures). */
  runPhase: string;
  /** The step that failed (cause failure), for messages. */
  failedStep?: number;
}

export interface RecoveryOutcome {
  /** The last step the restored state has applied. */
  appliedStep: number;
  /** Set when no surviving worker held the state: it came from the latest checkpoint, at this position. */
  restoredFrom?: TrainingPosition;
  generation: number;
  /** Wall seconds from the trigger to ready. */
  seconds: number;
  /** Seconds from the last message of a worker lost in this episode to its being declared gone (0: none lost). */
  detectSeconds: number;
  /** States walked, in order (for the log and tests). */
  path: RecoveryState[];
}

/** The latest checkpoint (or the run's initial state): what joiners get when no survivor holds the state. */
export interface RestorePoint {
  state: RankState;
  position?: TrainingPosition;
}

export interface RecoveryActions {
  members: Membership;
  log: Logger;
  heartbeatTimeoutMs: number;
  /** With fewer than `minWorkers` left, how long to wait for joiners before failing the run. */
  rejoinTimeoutMs: number;
  /** Workers the run needs to go on (--min-workers; default 1). Below it, `join` waits for joiners. */
  minWorkers?: number;
  /** Declares a worker gone (status, log line, fails every wait on it, aborts the ring). */
  declareGone(w: WorkerRecord, why: string): void;
  /** Ends the current (or forming) generation at every live worker: their ring waits end now. */
  abortGeneration?(reason: string): void;
  /** Releases a worker that announced its leave. */
  release(w: WorkerRecord): void;
  /** Resolves when a worker is admitted or declared gone (or at `deadline`, epoch ms). */
  membershipChanged(deadline: number): Promise<void>;
  snapshotFrom(w: WorkerRecord): Promise<RankState>;
  formRing(): Promise<void>;
  load(workers: readonly WorkerRecord[], generation: number, state: RankState): Promise<void>;
  restorePoint(): RestorePoint;
}

/** Runs the machine from its first state to ready; throws only on a non-recoverable error or no quorum. */
export async function runRecovery(trigger: RecoveryTrigger, act: RecoveryActions): Promise<RecoveryOutcome> {
  const { members, log, heartbeatTimeoutMs } = act;
  const t0 = Date.now();
  const ringBefore = [...members.active];
  const path: RecoveryState[] = [];
  let state: RecoveryState = trigger.cause === 'failure' ? 'detect' : 'drop';
  let taken: { state: RankState; restoredFrom?: TrainingPosition } | undefined;
  let quorumDeadline: number | undefined;
  let announced = false;
  // Holders of the run's current state: the members of the last ring formed, while they live.
  const holders = (): WorkerRecord[] => members.active.filter((w) => w.status === 'active');
  for (;;) {
    path.push(state);
    log.debug({ state, runPhase: trigger.runPhase }, `recovery: ${state}`);
    try {
      switch (state) {
        case 'detect': {
          // A failure with nobody declared gone yet: wait until a member falls silent for half the heartbeat
          // timeout (a lost peer), or the whole timeout (a failed step with everybody alive). An evaluating member
          // is silent between its batches by design: only the liveness monitor's full timeout judges it.
          if (!members.active.some((w) => w.status === 'gone')) {
            await firstSilentWorker(holders().filter((w) => !w.evaluating), heartbeatTimeoutMs / 2, Date.now() + heartbeatTimeoutMs);
          }
          state = nextState(state, 'settled');
          break;
        }
        case 'drop': {
          const now = Date.now();
          for (const w of members.all) {
            if (w.status === 'gone') continue;
            if (w.leaving) act.release(w);
            else if (trigger.cause === 'failure' && w.status === 'active' && isSilent(w, w.evaluating ? heartbeatTimeoutMs : heartbeatTimeoutMs / 2, now)) act.declareGone(w, `silent for ${now - w.lastSeen} ms`);
          }
          state = nextState(state, 'dropped');
          break;
        }
        case 'join': {
          // Training needs --min-workers workers; with fewer left, wait for joiners up to the rejoin deadline
          // (admitted as they come: the admission path runs meanwhile and wakes this wait).
          const needed = Math.max(1, act.minWorkers ?? 1);
          while (members.admitted.length < needed) {
            quorumDeadline ??= Date.now() + act.rejoinTimeoutMs;
            if (Date.now() >= quorumDeadline) break;
            if (!announced) {
              announced = true;
              const have = members.admitted.length;
              log.warn({ workers: have, minWorkers: needed, deadline: new Date(quorumDeadline).toISOString(), rejoinTimeoutMs: act.rejoinTimeoutMs },
                `${have} worker(s) left (${trigger.runPhase}), ${needed} needed (--min-workers); waiting up to ${((quorumDeadline - Date.now()) / 1000).toFixed(1)} s ` +
                `(until ${new Date(quorumDeadline).toISOString()}) for joiners`);
            }
            await act.membershipChanged(quorumDeadline);
          }
          state = nextState(state, members.admitted.length >= needed ? 'quorum' : 'no-quorum');
          break;
        }
        case 'snapshot': {
          taken = await takeState(trigger, holders(), act);
          state = nextState(state, 'state-taken');
          break;
        }
        case 'ring-set-up':
          await act.formRing();
          state = nextState(state, 'ring-formed');
          break;
        case 'state-transfer':
          await act.load(members.active, members.generation, taken!.state);
          state = nextState(state, 'state-loaded');
          break;
        case 'ready': {
          const lost = ringBefore.filter((w) => w.goneAt !== undefined && w.goneAt >= t0 - 60_000);
          const detectSeconds = Math.max(0, ...lost.map((w) => (w.goneAt! - w.lastSeen) / 1000));
          const outcome: RecoveryOutcome = {
            appliedStep: taken!.state.appliedStep, generation: members.generation, seconds: (Date.now() - t0) / 1000, detectSeconds, path,
            ...(taken!.restoredFrom ? { restoredFrom: taken!.restoredFrom } : {}),
          };
          if (trigger.cause !== 'start') {
            log.warn({ runPhase: trigger.runPhase, cause: trigger.cause, secondsLost: outcome.detectSeconds + outcome.seconds, detectSeconds: outcome.detectSeconds, workers: members.active.length, generation: outcome.generation, restoredFrom: outcome.restoredFrom, path },
              `survived a membership change during ${trigger.runPhase}: ${members.active.length} worker(s), generation ${outcome.generation}, ` +
              `${(outcome.detectSeconds + outcome.seconds).toFixed(2)} s lost (${outcome.detectSeconds.toFixed(2)} s to detect, ${outcome.seconds.toFixed(2)} s to recover)`);
          }
          return outcome;
        }
        case 'failed': {
          const needed = Math.max(1, act.minWorkers ?? 1);
          const remaining = members.admitted.length;
          const deadline = quorumDeadline !== undefined ? new Date(quorumDeadline).toISOString() : undefined;
          throw new MnistDdpError('PEER_LOST',
            `${trigger.runPhase}${trigger.failedStep !== undefined ? ` (step ${trigger.failedStep})` : ''}: ${remaining === 0 ? 'every worker is gone' : `only ${remaining} worker(s) remain`}, ` +
            `fewer than --min-workers ${needed}, and not enough joined within ${act.rejoinTimeoutMs} ms (--rejoin-timeout-ms${deadline ? `, deadline ${deadline}` : ''}); ` +
            `start workers with 'mnist-ddp worker', or lower --min-workers`,
            { minWorkers: needed, remaining, rejoinTimeoutMs: act.rejoinTimeoutMs, ...(deadline ? { deadline } : {}) });
        }
      }
    } catch (err) {
      if (!(isMnistDdpError(err) && err.details.recoverable === true) || !TRANSITIONS[state]['member-lost']) throw err;
      log.warn({ state, err: err.message }, `recovery: a member was lost during ${state}; re-planning with the members still alive`);
      act.abortGeneration?.(`a member was lost during ${state}`);
      state = nextState(state, 'member-lost');
    }
  }
}

/**
 * The state the new ring starts from. After a failure: the surviving holder that applied the fewest steps (the
 * failed step may have been applied by some). At a quiet point: any one holder. With no holder left (or at
 * start-up): the restore point, i.e. the latest checkpoint.
 */
async function takeState(trigger: RecoveryTrigger, holders: WorkerRecord[], act: RecoveryActions): Promise<{ state: RankState; restoredFrom?: TrainingPosition }> {
  if (holders.length === 0) {
    const point = act.restorePoint();
    if (trigger.cause !== 'start') act.log.warn({ position: point.position }, `no surviving worker holds the state; restoring the latest checkpoint onto ${act.members.admitted.length} worker(s)`);
    return trigger.cause === 'start' || !point.position ? { state: point.state } : { state: point.state, restoredFrom: point.position };
  }
  const sources = trigger.cause === 'failure' ? holders : holders.slice(0, 1);
  const states = await Promise.all(sources.map((w) => act.snapshotFrom(w)));
  return { state: states.reduce((a, b) => (b.appliedStep < a.appliedStep ? b : a)) };
}
