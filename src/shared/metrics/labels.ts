/** Label values shared by worker and coordinator metrics; the dashboard queries these exact strings. */

export const STEP_PHASES = ['compute', 'allreduce', 'apply'] as const;
export type StepPhase = (typeof STEP_PHASES)[number];

/** The `reason` label of the rejected-frame counters: the reasons the wire defines. */
export { REJECT_REASONS, type RejectReason } from '../wire/reject-reasons.js';

export const METRIC_PREFIX = 'mnistddp_';
