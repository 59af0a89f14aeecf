/** Label values shared by worker and coordinator metrics; the dashboard queries these exact strings. */

export const STEP_PHASES = ['compute', 'allreduce', 'apply'] as const;
export type StepPhase = (typeof STEP_PHASES)[number];

/** Why a data-plane or control-plane frame was dropped (maps onto FRAME_* error codes). */
export const REJECT_REASONS = ['malformed', 'stale', 'duplicate', 'unexpected'] as const;
export type RejectReason = (typeof REJECT_REASONS)[number];

export const METRIC_PREFIX = 'mnistddp_';
