import type { TrainConfig } from '../shared/config.js';
import { isMnistDdpError } from '../shared/errors.js';
import type { DatasetPlan } from '../shared/dataset-plan.js';
import { evaluationReport, type EvaluationReport } from '../shared/evaluation.js';
import { learningRate } from '../shared/lr-schedule.js';
import { stepCount } from '../shared/shard-plan.js';
import type { EvaluationCounts } from '../worker/replica.js';
import type { EvalSplit, ReplicaSnapshot, StepPlan, StepReport } from '../worker/worker-core.js';
import type { TrainingPosition } from './checkpoints.js';

/**
 * The coordinator's view of its workers. Debug mode implements it with one in-process WorkerCore; distributed mode
 * with worker processes behind ZeroMQ. The training loop below is the same for both.
 */
export interface StepResult {
  loss: number;
  globalCount: number;
  reports: StepReport[];
}

export interface WorkerGroup {
  /** Ranks taking part in the next step (may change between steps in an elastic run). */
  readonly worldSize: number;
  readonly generation: number;
  runStep(plan: Omit<StepPlan, 'generation'>): Promise<StepResult>;
  /** Exact counts summed over ranks. */
  evaluate(split: EvalSplit, mistakes?: number): Promise<EvaluationCounts>;
  snapshot(): Promise<ReplicaSnapshot>;
  close(reason?: string): Promise<void>;
  /** Step boundary: admit joiners, release leavers (elastic groups). */
  beforeStep?(): Promise<void>;
  /** After a recoverable failure of `step`: re-form and restore a state that has not applied it. */
  recover?(step: number): Promise<void>;
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

export async function runTraining(config: TrainConfig, group: WorkerGroup, plan: DatasetPlan, start: TrainingPosition, events: TrainEvents = {}): Promise<TrainOutcome> {
  const epochSize = plan.train.length;
  let { epoch, cursor, globalStep } = start;
  let samples = 0;
  let stoppedEarly = false;
  const t0 = performance.now();
  const totalSamples = config.epochs * epochSize;
  training: for (; epoch < config.epochs; epoch++, cursor = 0) {
    const epochStart = performance.now();
    let epochSamples = 0;
    while (cursor < epochSize) {
      if (config.maxSteps !== undefined && globalStep >= config.maxSteps) {
        stoppedEarly = true;
        break training;
      }
      await group.beforeStep?.();
      const count = stepCount(epochSize, cursor, group.worldSize, config.batchSize);
      const lr = learningRate(config, epoch + cursor / epochSize, config.epochs, globalStep);
      const stepStart = performance.now();
      let result: StepResult;
      try {
        result = await group.runStep({ epoch, step: globalStep, cursor, count, lr });
      } catch (err) {
        // An elastic group survives a lost worker: it re-forms and the same step (same cursor) runs again, so no
        // sample is dropped or counted twice.
        if (group.recover && isMnistDdpError(err) && err.details.recoverable === true) {
          await group.recover(globalStep);
          continue;
        }
        throw err;
      }
      const stepMs = performance.now() - stepStart;
      cursor += count;
      globalStep++;
      samples += count;
      epochSamples += count;
      events.onStep?.({
        epoch, step: globalStep, cursor, epochSize, loss: result.loss, lr, globalCount: result.globalCount,
        samplesPerSec: (count * 1000) / stepMs, worldSize: group.worldSize, generation: group.generation,
        reports: result.reports, progress: (epoch * epochSize + cursor) / totalSamples,
      });
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
