import type { RingPhase } from '../../shared/wire/ring-messages.js';
import type { SumArena } from './sum-arena.js';
import { chunkFlag, framesPerAllReduce, segmentReceivedAt, type RingLayout } from './topology.js';

/** A chunk a rank is still waiting for. */
export interface MissingChunk {
  phase: RingPhase;
  segment: number;
  chunk: number;
}

/**
 * One all-reduce in flight on one rank: its buffer, which chunks arrived (one flag per phase and chunk), how many
 * are still due, the arena its sums go through, and the deadline for silence from the left neighbour.
 */
export class RingOperation {
  /** One flag per (phase, chunk): reduce-scatter chunks first, then all-gather. */
  private readonly received: Uint8Array;
  /** Frames still due from the left neighbour. */
  remaining: number;
  /** All-gather frames are sent from this region of `arena` (see RingAllReducer's sendChunk). */
  readonly staging: Float32Array;
  readonly timer: NodeJS.Timeout;

  constructor(
    readonly step: number,
    readonly buf: Float32Array,
    readonly layout: RingLayout,
    private readonly rank: number,
    /** Sums go through this arena. */
    readonly arena: SumArena,
    readonly timeoutMs: number,
    onTimeout: (op: RingOperation) => void,
    readonly resolve: (buf: Float32Array) => void,
    readonly reject: (err: Error) => void,
  ) {
    this.received = new Uint8Array(2 * layout.totalChunks);
    this.remaining = framesPerAllReduce(layout, rank);
    this.staging = arena.nextStaging();
    this.timer = setTimeout(() => onTimeout(this), timeoutMs);
  }

  /** Marks a chunk received and restarts the deadline; false when it had already arrived. */
  markReceived(phase: RingPhase, segment: number, chunk: number): boolean {
    const flag = chunkFlag(this.layout, phase, segment, chunk);
    if (this.received[flag] === 1) return false;
    this.received[flag] = 1;
    this.remaining--;
    this.timer.refresh();
    return true;
  }

  /** The first chunk, in the order they are due, that has not arrived. */
  firstMissing(worldSize: number): MissingChunk | undefined {
    for (const phase of ['reduce-scatter', 'all-gather'] as const) {
      for (let t = 0; t < worldSize - 1; t++) {
        const segment = segmentReceivedAt(phase, this.rank, t, worldSize);
        for (let chunk = 0; chunk < (this.layout.chunksInSegment[segment] ?? 0); chunk++) {
          if (this.received[chunkFlag(this.layout, phase, segment, chunk)] !== 1) return { phase, segment, chunk };
        }
      }
    }
    return undefined;
  }
}
