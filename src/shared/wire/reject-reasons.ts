import type { ErrorCode } from '../core/errors.js';

/**
 * Why a received frame (ring data plane or coordinator control plane) was dropped. The one list of reasons: the
 * ring and the control server count by it, and the metrics' `reason` label takes exactly these values (dashboards
 * query the strings).
 */
export const REJECT_REASONS = ['malformed', 'stale', 'duplicate', 'unexpected'] as const;
export type RejectReason = (typeof REJECT_REASONS)[number];

/** The error code a rejection carries. */
export const REJECT_CODES: { readonly [R in RejectReason]: ErrorCode } = {
  malformed: 'FRAME_MALFORMED',
  stale: 'FRAME_STALE',
  duplicate: 'FRAME_DUPLICATE',
  unexpected: 'FRAME_UNEXPECTED',
};

/** A count of zero for every reason, e.g. to start a per-reason tally. */
export function zeroRejectCounts(): Record<RejectReason, number> {
  return { malformed: 0, stale: 0, duplicate: 0, unexpected: 0 };
}
