/**
 * Learning-rate schedules, as pure functions of progress so that every worker, a resumed run and the coordinator
 * compute the same value for the same step. Optional linear warm-up over the first `warmupSteps`.
 */
export const SCHEDULE_NAMES = ['constant', 'step', 'cosine'] as const;
export type ScheduleName = (typeof SCHEDULE_NAMES)[number];

export interface ScheduleConfig {
  schedule: ScheduleName;
  lr: number;
  /** step: multiply by `gamma` every `stepEpochs` epochs. */
  gamma: number;
  stepEpochs: number;
  /** cosine: decay to lr · minLrFactor at the end of training. */
  minLrFactor: number;
  warmupSteps: number;
}

/** `progress` is epochs completed as a real number (epoch + fraction of the current epoch). */
export function learningRate(c: ScheduleConfig, progress: number, totalEpochs: number, globalStep: number): number {
  let lr: number;
  switch (c.schedule) {
    case 'constant':
      lr = c.lr;
      break;
    case 'step':
      lr = c.lr * c.gamma ** Math.floor(progress / Math.max(1, c.stepEpochs));
      break;
    case 'cosine': {
      const t = Math.min(1, progress / Math.max(1e-9, totalEpochs));
      const min = c.lr * c.minLrFactor;
      lr = min + 0.5 * (c.lr - min) * (1 + Math.cos(Math.PI * t));
      break;
    }
  }
  if (c.warmupSteps > 0 && globalStep < c.warmupSteps) lr *= (globalStep + 1) / c.warmupSteps;
  return lr;
}
