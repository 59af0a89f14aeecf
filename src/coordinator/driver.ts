import type { TrainConfig } from '../shared/core/config.js';
import { isMnistDdpError, MnistDdpError } from '../shared/core/errors.js';
import type { DatasetPlan } from '../shared/data/dataset-plan.js';
import { evaluationReport, type EvaluationReport } from '../shared/train/evaluation.js';
import { learningRate } from '../shared/train/lr-schedule.js';
import { stepCount } from '../shared/data/shard-plan.js';
import type { EvaluationCounts } from '../shared/train/evaluator.js';
import type { EvalSplit, ReplicaSnapshot, StepPlan, StepReport } from '../shared/wire/control-payloads.js';
import type { TrainingPosition } from './checkpoints.js';
import type { RecoveryOutcome } from './recovery-machine.js';

/**
 * The coordinator's view of its workers. Debug mode implements it with one in-process WorkerCore; distributed mode
 * with worker processes behind ZeroMQ. The training loop below is the same for both.
 */
export interface StepResult {
  loss: number;
  reports: StepReport[];
}

export interface WorkerGroup {
  /** Ranks taking part in the next step (may change between steps in an elastic run). */
  readonly worldSize: number;
  readonly generation: number;
  /**
   * Orders one step. The driver may order the next steps before this one settles (up to pipelineDepth in flight);
   * results settle in order.
   */
  runStep(order: StepOrder): Promise<StepResult>;
  /** Step orders the group accepts in flight; 1 (the default) means strictly one at a time. */
  readonly pipelineDepth?: number;
  /** Exact counts summed over ranks. */
  evaluate(split: EvalSplit, mistakes?: number): Promise<EvaluationCounts>;
  snapshot(): Promise<ReplicaSnapshot>;
  close(reason?: string): Promise<void>;
  /** Step boundary: admit joiners, release leavers, drop the dead (elastic groups); may restore a checkpoint. */
  beforeStep?(): Promise<RecoveryOutcome | void>;
  /** True when beforeStep has work to do (joiners or leavers); the driver drains the pipeline first. */
  membershipChangePending?(): boolean;
  /**
   * After a recoverable failure of `step` during `runPhase` (step, evaluation, checkpoint; every order in flight has
   * settled): re-form and restore one survivor's state everywhere, or the latest checkpoint's when no survivor holds
   * it (`restoredFrom`). Returns the last step that state has applied; the driver orders the steps after it again.
   */
  recover?(step: number, runPhase?: string): Promise<RecoveryOutcome>;
  /** The latest checkpoint, which recovery restores when no worker holds the state any more. */
  setRestorePoint?(snapshot: ReplicaSnapshot, position: TrainingPosition): void;
}

export interface StepEvent {
  epoch: number;
  step: number;
  cursor: number;
  epochSize: number;
  loss: number;
  lr: number;
  globalCount: number;
  samplesPerSec: number;
  worldSize: number;
  generation: number;
  reports: StepReport[];
  /** Fraction of the whole run done, 0..1. */
  progress: number;
}

export interface EpochEvent {
  epoch: number;
  validation: EvaluationReport | null;
  wallMs: number;
  samplesPerSec: number;
}

export interface TrainEvents {
  onStep?(e: StepEvent): void;
  onEpoch?(e: EpochEvent): void;
  /**
   * Called at every epoch end, when max-steps stops a run and every `checkpointEvery` (at a drained pipeline);
   * persists a resumable checkpoint. `periodic` is false at epoch ends and at the end of the run.
   */
  checkpoint?(position: TrainingPosition, periodic: boolean): Promise<void>;
  /** Training went back to `position` (a checkpoint restored): history records of later steps are superseded. */
  onRewind?(position: TrainingPosition): void;
  /** Every membership change the run survived, with what it was doing and the seconds it cost. */
  onRecovered?(outcome: RecoveryOutcome, runPhase: string): void;
}

/** When periodic checkpoints fall due: every `steps` committed steps and/or every `seconds` of wall time. */
export interface CheckpointEvery {
  steps?: number;
  seconds?: number;
}

export interface TrainOptions {
  checkpointEvery?: CheckpointEvery;
  /**
   * Aborted (SIGINT, SIGTERM: an operator, pm2 or Kubernetes stopping the run): no new step is ordered, the steps in
   * flight commit, a resumable checkpoint is written, and the run ends without its final evaluation (`interrupted`).
   */
  stop?: AbortSignal;
  /** Evaluate this split after training, inside the recovery path (a worker lost meanwhile is survived). */
  finalEvaluation?: { split: EvalSplit; mistakes: number };
}

export interface TrainOutcome {
  position: TrainingPosition;
  samplesPerSec: number;
  trainWallMs: number;
  samples: number;
  stoppedEarly: boolean;
  /** Stopped by `options.stop`: the checkpoint is written, the final evaluation was not run. */
  interrupted: boolean;
  finalEvaluation?: EvaluationCounts;
}

/** What the driver orders: a step plan without the generation, which the group stamps on when it sends the order. */
export type StepOrder = Omit<StepPlan, 'generation'>;

/** Steps whose commits the throughput of a StepEvent is measured over (pipelined steps may commit back to back). */
const RATE_WINDOW_STEPS = 8;

interface InFlight {
  order: StepOrder;
  result: Promise<StepResult>;
  /** The world the step ran in (recorded when ordered: a recovery may commit it after the world changed). */
  worldSize: number;
  generation: number;
}

/** A quiet-phase call (evaluation, checkpoint) whose recovery had to restore a checkpoint: training goes back. */
const REWOUND = Symbol('rewound');

/**
 * The training loop. Step orders are pipelined: while the group works on step k the order for step k+1 is already
 * queued at every worker (up to `group.pipelineDepth` orders in flight), so no worker idles through the
 * coordinator's round trip between two steps. Orders carry everything a step needs (epoch, cursor, count, lr), so
 * they can be planned ahead; results are committed strictly in order. The pipeline drains at epoch ends (evaluation
 * and checkpoints see a quiet group), before membership changes and before periodic checkpoints.
 *
 * Every phase is inside the recovery path (issue #14): a recoverable failure of a step, an evaluation or a checkpoint
 * runs the group's recovery, then redoes what the restored state lacks. When recovery had to restore a checkpoint
 * (no survivor held the state), training goes back to its position and `onRewind` says which records that supersedes.
 */
export async function runTraining(config: TrainConfig, group: WorkerGroup, plan: DatasetPlan, start: TrainingPosition, events: TrainEvents = {}, options: TrainOptions = {}): Promise<TrainOutcome> {
  const epochSize = plan.train.length;
  const depth = Math.max(1, group.pipelineDepth ?? 1);
  let { epoch, cursor, globalStep } = start;
  let samples = 0;
  let stoppedEarly = false;
  let finalEvaluation: EvaluationCounts | undefined;
  const t0 = performance.now();
  const totalSamples = config.epochs * epochSize;
  const atStepLimit = (step: number): boolean => config.maxSteps !== undefined && step >= config.maxSteps;
  const interrupted = (): boolean => options.stop?.aborted === true;
  const every = options.checkpointEvery ?? {};
  let lastCheckpoint = { step: globalStep, at: performance.now() };
  const checkpointDue = (): boolean => (every.steps !== undefined && globalStep - lastCheckpoint.step >= every.steps) ||
    (every.seconds !== undefined && globalStep > lastCheckpoint.step && performance.now() - lastCheckpoint.at >= every.seconds * 1000);
  const rewind = (to: TrainingPosition): void => {
    samples -= Math.max(0, (epoch - to.epoch) * epochSize + cursor - to.cursor);
    ({ epoch, cursor, globalStep } = to);
    lastCheckpoint = { step: globalStep, at: performance.now() };
    events.onRewind?.(to);
  };
  const recover = async (err: unknown, runPhase: string, step: number): Promise<RecoveryOutcome> => {
    if (!(group.recover && isMnistDdpError(err) && err.details.recoverable === true)) throw err;
    const outcome = await group.recover(step, runPhase);
    events.onRecovered?.(outcome, runPhase);
    return outcome;
  };
  /** Runs a quiet-phase call, recovering and retrying it until it succeeds or a checkpoint had to be restored. */
  const quiet = async <T>(runPhase: string, call: () => Promise<T>): Promise<T | typeof REWOUND> => {
    for (;;) {
      try {
        return await call();
      } catch (err) {
        const outcome = await recover(err, runPhase, globalStep - 1);
        if (outcome.restoredFrom) {
          rewind(outcome.restoredFrom);
          return REWOUND;
        }
        if (outcome.appliedStep !== globalStep - 1) {
          throw new MnistDdpError('REPLICA_DIVERGED', `recovering ${runPhase}: the restored state has applied step ${outcome.appliedStep}, the run committed step ${globalStep - 1}`, { applied: outcome.appliedStep, committed: globalStep - 1 });
        }
      }
    }
  };
  const checkpoint = async (periodic: boolean): Promise<boolean> => {
    if (!events.checkpoint) return true;
    const position = { epoch, cursor, globalStep };
    if (await quiet('checkpoint', () => events.checkpoint!(position, periodic)) === REWOUND) return false;
    lastCheckpoint = { step: globalStep, at: performance.now() };
    return true;
  };
  run: for (;;) {
  training: while (epoch < config.epochs) {
    const epochStart = performance.now();
    let epochSamples = 0;
    // (time, samples) at the latest commits, the epoch start first: the rate is taken over the last few steps.
    const recent: Array<{ at: number; samples: number }> = [{ at: epochStart, samples: 0 }];
    const commit = ({ order, worldSize, generation }: InFlight, result: StepResult | undefined): void => {
      const now = performance.now();
      cursor += order.count;
      globalStep++;
      samples += order.count;
      epochSamples += order.count;
      recent.push({ at: now, samples: epochSamples });
      if (recent.length > RATE_WINDOW_STEPS + 1) recent.shift();
      const from = recent[0]!;
      events.onStep?.({
        // A step a lost worker took its reports with (applied everywhere before the failure) has no known loss.
        epoch, step: globalStep, cursor, epochSize, loss: result?.loss ?? NaN, lr: order.lr, globalCount: order.count,
        samplesPerSec: ((epochSamples - from.samples) * 1000) / Math.max(now - from.at, 1e-3), worldSize, generation,
        reports: result?.reports ?? [], progress: (epoch * epochSize + cursor) / totalSamples,
      });
    };
    const inFlight: InFlight[] = [];
    // Where the next order starts: ahead of the committed (cursor, globalStep) by the orders in flight.
    let planCursor = cursor;
    let planStep = globalStep;
    for (;;) {
      while (inFlight.length < depth && planCursor < epochSize && !atStepLimit(planStep) && !interrupted()) {
        if (group.membershipChangePending?.() || checkpointDue()) {
          if (inFlight.length > 0) break;
          if (checkpointDue() && !(await checkpoint(true))) continue training;
          if (group.membershipChangePending?.()) {
            let outcome: RecoveryOutcome | void;
            try {
              outcome = await group.beforeStep?.();
            } catch (err) {
              outcome = await recover(err, 'join', globalStep - 1);
            }
            if (outcome) events.onRecovered?.(outcome, 'join');
            if (outcome?.restoredFrom) {
              rewind(outcome.restoredFrom);
              continue training;
            }
          }
        }
        const count = stepCount(epochSize, planCursor, group.worldSize, config.batchSize);
        // The world that runs the step sets its global batch, hence its scaled lr (lr-schedule.ts peakLearningRate).
        const lr = learningRate(config, epoch + planCursor / epochSize, config.epochs, planStep, group.worldSize);
        const order = { epoch, step: planStep, cursor: planCursor, count, lr };
        const result = group.runStep(order);
        result.catch(() => undefined);
        inFlight.push({ order, result, worldSize: group.worldSize, generation: group.generation });
        planCursor += count;
        planStep++;
      }
      const head = inFlight.shift();
      if (!head) {
        if ((atStepLimit(globalStep) && cursor < epochSize) || interrupted()) {
          stoppedEarly = true;
          break training;
        }
        break;
      }
      let result: StepResult;
      try {
        result = await head.result;
      } catch (err) {
        // An elastic group survives a lost worker: once every order in flight has settled it re-forms and restores a
        // survivor's state; the steps that state has not applied are ordered again (same cursors), so no sample is
        // dropped or counted twice. With no survivor, a checkpoint is restored and training goes back to it.
        const settled = await Promise.allSettled(inFlight.map((f) => f.result));
        const outcome = await recover(err, 'step', head.order.step);
        if (outcome.restoredFrom) {
          rewind(outcome.restoredFrom);
          continue training;
        }
        const applied = outcome.appliedStep;
        if (applied < globalStep - 1) {
          throw new MnistDdpError('REPLICA_DIVERGED', `recovering step ${head.order.step}: the restored state has applied only step ${applied}, before the committed step ${globalStep - 1}`, { applied, committed: globalStep - 1 });
        }
        if (applied > (inFlight.at(-1) ?? head).order.step) {
          throw new MnistDdpError('REPLICA_DIVERGED', `recovering step ${head.order.step}: the restored state claims step ${applied}, which was never ordered`, { applied });
        }
        // Steps the restored state has applied are committed, with their results where they arrived.
        if (head.order.step <= applied) commit(head, undefined);
        inFlight.forEach((f, i) => {
          const s = settled[i]!;
          if (f.order.step <= applied) commit(f, s.status === 'fulfilled' ? s.value : undefined);
        });
        inFlight.length = 0;
        planCursor = cursor;
        planStep = globalStep;
        continue;
      }
      commit(head, result);
    }
    const wallMs = performance.now() - epochStart;
    let counts: EvaluationCounts | null = null;
    if (plan.validation.length > 0) {
      const validation = await quiet('evaluation', () => group.evaluate('validation'));
      if (validation === REWOUND) continue training;
      counts = validation;
    }
    events.onEpoch?.({
      epoch, wallMs, samplesPerSec: (epochSamples * 1000) / wallMs,
      validation: counts ? evaluationReport(counts.confusion, counts.lossSum) : null,
    });
    epoch++;
    cursor = 0;
    if (!(await checkpoint(false))) continue training;
  }
    if (stoppedEarly && !(await checkpoint(false))) {
      stoppedEarly = false;
      continue run;
    }
    if (options.finalEvaluation && !interrupted()) {
      const { split, mistakes } = options.finalEvaluation;
      const test = await quiet('evaluation', () => group.evaluate(split, mistakes));
      if (test === REWOUND) {
        stoppedEarly = false;
        continue run;
      }
      finalEvaluation = test;
    }
    break;
  }
  const trainWallMs = performance.now() - t0;
  return {
    position: stoppedEarly ? { epoch, cursor, globalStep } : { epoch: config.epochs, cursor: 0, globalStep },
    samplesPerSec: (samples * 1000) / trainWallMs, trainWallMs, samples, stoppedEarly, interrupted: interrupted() && finalEvaluation === undefined,
    ...(finalEvaluation ? { finalEvaluation } : {}),
  };
}
