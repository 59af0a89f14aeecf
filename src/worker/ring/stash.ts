import type { RejectReason } from '../../shared/wire/reject-reasons.js';

/**
 * Frames for a step this rank has not started yet are kept: the left neighbour may be one step ahead (it cannot
 * finish a step without this rank's share, so never two). Kept only for the next MAX_STASH_STEPS_AHEAD step numbers
 * (orders may skip numbers), and at most MAX_STASHED_BYTES or twice the largest buffer reduced so far, whichever is
 * more: one step's frames from the left neighbour are under one buffer. Beyond that a frame is refused (issue #15).
 */
export const MAX_STASH_STEPS_AHEAD = 2;
export const MAX_STASHED_BYTES = 64 * 1024 * 1024;

/** What the stash needs of a frame: its step and its payload's size. */
export interface StashableFrame {
  readonly step: number;
  readonly data: { readonly byteLength: number };
}

/** A stashed frame the stash let go of without using it, with the reason it is rejected. */
export interface DroppedFrame<F> {
  frame: F;
  reason: RejectReason;
  message: string;
}

/** Frames that arrived for future steps, bounded in bytes and in how far ahead they may be. */
export class FutureStepStash<F extends StashableFrame> {
  private frames: F[] = [];
  private bytes = 0;
  private largestBufferBytes = 0;

  constructor(
    private readonly maxStepsAhead = MAX_STASH_STEPS_AHEAD,
    private readonly maxBytes = MAX_STASHED_BYTES,
  ) {}

  /** Bytes currently kept. */
  get byteLength(): number {
    return this.bytes;
  }

  get size(): number {
    return this.frames.length;
  }

  /** Records the size of a buffer being reduced: the byte bound is at least twice the largest. */
  noteBuffer(byteLength: number): void {
    this.largestBufferBytes = Math.max(this.largestBufferBytes, byteLength);
  }

  /**
   * Keeps `frame`, which is for a step after `lastStep` (the step this rank started last, -1 before its first), or
   * says why it is refused. The frame's floats may view ZeroMQ's received memory; they are kept as they are.
   */
  offer(frame: F, lastStep: number): string | undefined {
    // Before its first step a rank cannot know where the run stands (a resumed run starts at any step number).
    if (lastStep >= 0 && frame.step > lastStep + this.maxStepsAhead) {
      return `frame for step ${frame.step} is more than ${this.maxStepsAhead} steps ahead of this rank's step ${lastStep}`;
    }
    const limit = Math.max(this.maxBytes, 2 * this.largestBufferBytes);
    if (this.bytes + frame.data.byteLength > limit) return `frames for future steps would exceed ${limit} bytes (step ${frame.step})`;
    this.frames.push(frame);
    this.bytes += frame.data.byteLength;
    return undefined;
  }

  /**
   * Called as this rank starts `step`: hands back that step's frames in arrival order, lets go of frames for
   * earlier steps and of those now too far ahead (`dropped`), and keeps the rest.
   */
  take(step: number): { current: F[]; dropped: DroppedFrame<F>[] } {
    const stashed = this.frames;
    this.frames = [];
    this.bytes = 0;
    const current: F[] = [];
    const dropped: DroppedFrame<F>[] = [];
    for (const frame of stashed) {
      if (frame.step === step) current.push(frame);
      else if (frame.step < step) dropped.push({ frame, reason: 'stale', message: `step ${frame.step} frame was stashed but this rank moved on to step ${step}` });
      else if (frame.step > step + this.maxStepsAhead) {
        dropped.push({ frame, reason: 'unexpected', message: `stashed frame for step ${frame.step} is more than ${this.maxStepsAhead} steps ahead of step ${step}` });
      } else {
        this.frames.push(frame);
        this.bytes += frame.data.byteLength;
      }
    }
    return { current, dropped };
  }
}
