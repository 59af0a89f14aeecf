/**
 * Learning-rate schedules, as pure functions of progress so that every worker, a resumed run and the coordinator
 * compute the same value for the same step. Optional linear warm-up over the first `warmupSteps`.
 */
export const SCHEDULE_NAMES = ['constant', 'step', 'cosine'] as const;
export type ScheduleName = (typeof SCHEDULE_NAMES)[number];

/**
 * How `lr` relates to the global batch. `none`: `lr` is the peak as given, whatever the batch. `linear`: the linear
 * scaling rule of Goyal et al. 2017 ("Accurate, Large Minibatch SGD"): `lr` is the peak for a global batch of
 * `lrReferenceBatch` samples and the peak used is lr × global batch / lrReferenceBatch. The rule is derived for SGD
 * (with momentum); for Adam a smaller scaling is usually better.
 */
export const LR_SCALING_NAMES = ['none', 'linear'] as const;
export type LrScaling = (typeof LR_SCALING_NAMES)[number];

export interface ScheduleConfig {
  schedule: ScheduleName;
  lr: number;
  /** step: multiply by `gamma` every `stepEpochs` epochs. */
  gamma: number;
  stepEpochs: number;
  /** cosine: decay to lr · minLrFactor at the end of training. */
  minLrFactor: number;
  warmupSteps: number;
  lrScaling: LrScaling;
  /** linear: the global batch `lr` is meant for. */
  lrReferenceBatch: number;
  /** Samples per worker per step. */
  batchSize: number;
}

/** A step's global batch: every rank takes `batchSize` samples (the last step of an epoch may hold fewer). */
export function globalBatch(c: Pick<ScheduleConfig, 'batchSize'>, worldSize: number): number {
  return c.batchSize * worldSize;
}

/**
 * The peak learning rate of a step run by `worldSize` ranks: `lr`, times global batch / lrReferenceBatch under
 * linear scaling. Elastic runs: the world size is the one of the step's generation, so when workers join or leave
 * the peak follows the global batch from the next step on (as Horovod Elastic resets lr · size after a membership
 * change), while the schedule's position (global step, epochs done) goes on: warm-up and decay are not restarted.
 * A shorter last step of an epoch keeps its world's peak: the rule is about the nominal batch, not one step's count.
 */
export function peakLearningRate(c: Pick<ScheduleConfig, 'lr' | 'lrScaling' | 'lrReferenceBatch' | 'batchSize'>, worldSize: number): number {
  return c.lrScaling === 'linear' ? c.lr * (globalBatch(c, worldSize) / c.lrReferenceBatch) : c.lr;
}

/**
 * The learning rate of the step at `globalStep` run by `worldSize` ranks; `progress` is epochs completed as a real
 * number (epoch + fraction of the current epoch). The schedule shapes the peak of peakLearningRate (scaled or not),
 * and warm-up ramps linearly up to that peak: (globalStep + 1) / warmupSteps of it. Goyal et al. start their ramp
 * at the unscaled lr instead; starting near zero is the stricter warm-up and keeps one rule for both settings.
 */
export function learningRate(c: ScheduleConfig, progress: number, totalEpochs: number, globalStep: number, worldSize: number): number {
  const peak = peakLearningRate(c, worldSize);
  let lr: number;
  switch (c.schedule) {
    case 'constant':
      lr = peak;
      break;
    case 'step':
      lr = peak * c.gamma ** Math.floor(progress / Math.max(1, c.stepEpochs));
      break;
    case 'cosine': {
      const t = Math.min(1, progress / Math.max(1e-9, totalEpochs));
      const min = peak * c.minLrFactor;
      lr = min + 0.5 * (peak - min) * (1 + Math.cos(Math.PI * t));
      break;
    }
  }
  if (c.warmupSteps > 0 && globalStep < c.warmupSteps) lr *= (globalStep + 1) / c.warmupSteps;
  return lr;
}
