import { z } from 'zod';
import { mistakeSchema } from '../train/mistake.js';
import { OPTIMIZER_NAMES, type OptimizerState } from '../train/optimizers.js';

/**
 * The records the control plane carries, as zod schemas; each domain type is `z.infer` of its schema, so what a
 * worker computes, what travels and what the coordinator merges are declared once. control-messages.ts builds the
 * messages by extending these.
 */
export const uint = z.number().int().nonnegative();
export const finite = z.number().finite();
export const float32Array = z.custom<Float32Array>((v) => v instanceof Float32Array, 'expected a Float32Array');

/** What the coordinator asks of every worker for one step. */
export const stepPlanSchema = z.object({
  generation: uint,
  epoch: uint,
  /** Global step number (counts from the start of the run). */
  step: uint,
  /** Position in the epoch order where this step's global batch starts. */
  cursor: uint,
  /** Samples in the global batch. */
  count: uint,
  lr: finite,
  /**
   * Samples each rank takes, by rank, summing to `count` (--balance throughput: unequal shares, shard-plan.ts
   * shareSlice). Absent: the equal split of rankSlice.
   */
  shares: z.array(uint).optional(),
});
export type StepPlan = z.infer<typeof stepPlanSchema>;

/** One rank's account of a step it ran. */
export const stepReportSchema = z.object({
  rank: uint,
  /** Mean loss over the global batch (NaN when the global batch was empty). */
  loss: z.number(),
  globalCount: uint,
  /** Samples this rank processed. */
  localCount: uint,
  computeMs: finite,
  allReduceMs: finite,
  applyMs: finite,
  /** Set when the step was skipped on every rank for anomalous gradients (issue #15): the ranks named and why. */
  anomaly: z.object({ ranks: z.array(uint), reasons: z.array(z.string()) }).optional(),
});
export type StepReport = z.infer<typeof stepReportSchema>;

/** An optimiser's whole state over the flat parameter buffer: exactly OptimizerState (shared/train/optimizers.ts). */
export const optimizerStateSchema: z.ZodType<OptimizerState> = z.object({
  name: z.enum(OPTIMIZER_NAMES),
  /** Updates applied so far. */
  step: uint,
  /** Per-parameter buffers (SGD: velocity; Adam: first and second moments), each paramCount long. */
  slots: z.array(float32Array),
});

/** What a replica needs to continue exactly where another one is: a joining worker's or a recovery's starting state. */
export const replicaSnapshotSchema = z.object({
  /** Every model weight (trainable, frozen and batch-norm statistics) in model.weights order. */
  weights: float32Array,
  optimizer: optimizerStateSchema,
});
export type ReplicaSnapshot = z.infer<typeof replicaSnapshotSchema>;

export const evalSplitSchema = z.enum(['validation', 'test']);
export type EvalSplit = z.infer<typeof evalSplitSchema>;

/**
 * One rank's exact evaluation counts over its share of a split, as they travel: EvaluationCounts
 * (shared/train/evaluator.ts) with the confusion matrix as plain numbers instead of an Int32Array.
 */
export const evaluationCountsSchema = z.object({
  /** NUM_CLASSES × NUM_CLASSES, row = true label, column = predicted. */
  confusion: z.array(uint),
  lossSum: finite,
  count: uint,
  /** The most confidently misclassified samples, most confident first. */
  mistakes: z.array(mistakeSchema),
});
export type EvaluationCountsWire = z.infer<typeof evaluationCountsSchema>;
