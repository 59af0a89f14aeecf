import { MnistDdpError } from '../../shared/core/errors.js';
import type { Logger } from '../../shared/core/log.js';
import { REJECT_CODES, zeroRejectCounts, type RejectReason } from '../../shared/wire/reject-reasons.js';

/** What a rejection names of the frame, when it decoded that far. */
export interface RejectedFrame {
  type: string;
  rank: number;
  generation: number;
  step?: number;
}

/**
 * How a collective refuses a received frame: counted by reason, logged as a coded error, and passed to the owner's
 * callback (metrics). A rejected frame never touches a reduction.
 */
export class FrameRejecter {
  /** Frames refused so far, by reason. */
  readonly counts: Record<RejectReason, number> = zeroRejectCounts();

  constructor(
    private readonly rank: number,
    private readonly log: Logger,
    private readonly onRejected?: (err: MnistDdpError, reason: RejectReason) => void,
  ) {}

  reject(reason: RejectReason, message: string, frame?: RejectedFrame): void {
    this.counts[reason]++;
    const err = new MnistDdpError(REJECT_CODES[reason], `rank ${this.rank} rejected a frame: ${message}`, {
      reason,
      ...(frame && { type: frame.type, from: frame.rank, generation: frame.generation, step: frame.step }),
    });
    this.log.warn({ err: err.toJSON() }, 'frame rejected');
    this.onRejected?.(err, reason);
  }
}
