import type { TrainConfig } from '../shared/core/config.js';
import { isMnistDdpError, MnistDdpError } from '../shared/core/errors.js';
import type { DatasetPlan } from '../shared/data/dataset-plan.js';
import { evaluationReport, type EvaluationReport } from '../shared/train/evaluation.js';
import { learningRate } from '../shared/train/lr-schedule.js';
import { stepCount } from '../shared/data/shard-plan.js';
import type { EvaluationCounts } from '../shared/train/evaluator.js';
import type { EvalSplit, ReplicaSnapshot, StepPlan, StepReport } from '../shared/wire/control-payloads.js';
import type { TrainingPosition } from './checkpoints.js';

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
  /** Step boundary: admit joiners, release leavers (elastic groups). */
  beforeStep?(): Promise<void>;
  /** True when beforeStep has work to do (joiners or leavers); the driver drains the pipeline first. */
  membershipChangePending?(): boolean;
  /**
   * After a recoverable failure of `step` (every order in flight has settled): re-form and restore one survivor's
   * state everywhere. Returns the last step that state has applied; the driver orders the steps after it again.
   */
  recover?(step: number): Promise<number>;
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
  /** Called at every epoch end and when max-steps stops a run; persists a resumable checkpoint. */
  checkpoint?(position: TrainingPosition): Promise<void>;
}

export interface TrainOutcome {
  position: TrainingPosition;
  samplesPerSec: number;
  trainWallMs: number;
  samples: number;
  stoppedEarly: boolean;
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

/**
 * The training loop. Step orders are pipelined: while the group works on step k the order for step k+1 is already
 * queued at every worker (up to `group.pipelineDepth` orders in flight), so no worker idles through the
 * coordinator's round trip between two steps. Orders carry everything a step needs (epoch, cursor, count, lr), so
 * they can be planned ahead; results are committed strictly in order. The pipeline drains at epoch ends (evaluation
 * and checkpoints see a quiet group) and before membership changes.
 */
export async function runTraining(config: TrainConfig, group: WorkerGroup, plan: DatasetPlan, start: TrainingPosition, events: TrainEvents = {}): Promise<TrainOutcome> {
  const epochSize = plan.train.length;
  const depth = Math.max(1, group.pipelineDepth ?? 1);
  let { epoch, cursor, globalStep } = start;
  let samples = 0;
  let stoppedEarly = false;
  const t0 = performance.now();
  const totalSamples = config.epochs * epochSize;
  const atStepLimit = (step: number): boolean => config.maxSteps !== undefined && step >= config.maxSteps;
  training: for (; epoch < config.epochs; epoch++, cursor = 0) {
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
      while (inFlight.length < depth && planCursor < epochSize && !atStepLimit(planStep)) {
        if (group.membershipChangePending?.()) {
          if (inFlight.length > 0) break;
          await group.beforeStep?.();
        }
        const count = stepCount(epochSize, planCursor, group.worldSize, config.batchSize);
        const lr = learningRate(config, epoch + planCursor / epochSize, config.epochs, planStep);
        const order = { epoch, step: planStep, cursor: planCursor, count, lr };
        const result = group.runStep(order);
        result.catch(() => undefined);
        inFlight.push({ order, result, worldSize: group.worldSize, generation: group.generation });
        planCursor += count;
        planStep++;
      }
      const head = inFlight.shift();
      if (!head) {
        if (atStepLimit(globalStep) && cursor < epochSize) {
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
        // dropped or counted twice.
        if (group.recover && isMnistDdpError(err) && err.details.recoverable === true) {
          const settled = await Promise.allSettled(inFlight.map((f) => f.result));
          const applied = await group.recover(head.order.step);
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
        throw err;
      }
      commit(head, result);
    }
    const wallMs = performance.now() - epochStart;
    const counts = plan.validation.length > 0 ? await group.evaluate('validation') : null;
    events.onEpoch?.({
      epoch, wallMs, samplesPerSec: (epochSamples * 1000) / wallMs,
      validation: counts ? evaluationReport(counts.confusion, counts.lossSum) : null,
    });
    await events.checkpoint?.({ epoch: epoch + 1, cursor: 0, globalStep });
  }
  if (stoppedEarly) await events.checkpoint?.({ epoch, cursor, globalStep });
  const trainWallMs = performance.now() - t0;
  return {
    position: stoppedEarly ? { epoch, cursor, globalStep } : { epoch: config.epochs, cursor: 0, globalStep },
    samplesPerSec: (samples * 1000) / trainWallMs, trainWallMs, samples, stoppedEarly,
  };
}
