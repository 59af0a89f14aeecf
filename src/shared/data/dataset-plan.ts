import { labelFraction, loadMnist, parseClassSpec, selectClasses, splitTrainValidation, type MnistDataset } from './mnist.js';

/**
 * Which samples a run trains, validates and tests on. A pure function of the config, so the coordinator and every
 * worker derive the same index sets without shipping them over the network.
 */
export interface DatasetPlanConfig {
  seed: number;
  validationSize: number;
  classes?: string | undefined;
  labelFraction: number;
  trainSubset?: number | undefined;
  dataDir?: string | undefined;
}

export interface DatasetPlan {
  data: MnistDataset;
  /** Indices into data.train. */
  train: Int32Array<ArrayBufferLike>;
  /** Indices into data.train (held out from training). */
  validation: Int32Array<ArrayBufferLike>;
  /** Indices into data.test. */
  test: Int32Array<ArrayBufferLike>;
  classes: number[] | null;
}

export function planDataset(c: DatasetPlanConfig): DatasetPlan {
  const data = loadMnist({ dataDir: c.dataDir });
  const classes = c.classes ? parseClassSpec(c.classes) : null;
  const split = splitTrainValidation(data.train.count, Math.min(c.validationSize, data.train.count - 1), c.seed);
  let train: Int32Array<ArrayBufferLike> = split.train;
  let validation: Int32Array<ArrayBufferLike> = split.validation;
  let test: Int32Array<ArrayBufferLike> = Int32Array.from({ length: data.test.count }, (_, i) => i);
  if (classes) {
    train = selectClasses(data.train.labels, train, classes);
    validation = selectClasses(data.train.labels, validation, classes);
    test = selectClasses(data.test.labels, test, classes);
  }
  if (c.labelFraction < 1) train = labelFraction(data.train.labels, train, c.labelFraction, c.seed);
  if (c.trainSubset !== undefined && c.trainSubset < train.length) train = train.slice(0, c.trainSubset);
  return { data, train, validation, test, classes };
}
