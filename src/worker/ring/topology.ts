import type { RingPhase } from '../../shared/wire/ring-messages.js';

/**
 * How a flat buffer of `length` floats is cut for a ring of `worldSize` ranks: N contiguous segments (the first
 * `length % N` one float longer), each cut into chunks of at most `chunkFloats`. Every rank computes the same layout
 * from the same inputs, so frames only carry (segment, chunk).
 */
export interface RingLayout {
  readonly length: number;
  readonly worldSize: number;
  readonly chunkFloats: number;
  readonly segmentOffset: readonly number[];
  readonly segmentLength: readonly number[];
  readonly chunksInSegment: readonly number[];
  /** Index of a segment's first chunk in a numbering of all chunks of the buffer. */
  readonly firstChunkOf: readonly number[];
  readonly totalChunks: number;
}

export function ringLayout(length: number, worldSize: number, chunkFloats: number): RingLayout {
  const segmentOffset: number[] = [];
  const segmentLength: number[] = [];
  const chunksInSegment: number[] = [];
  const firstChunkOf: number[] = [];
  const base = Math.floor(length / worldSize);
  const extra = length % worldSize;
  let offset = 0;
  let chunks = 0;
  for (let s = 0; s < worldSize; s++) {
    const len = base + (s < extra ? 1 : 0);
    segmentOffset.push(offset);
    segmentLength.push(len);
    firstChunkOf.push(chunks);
    const n = Math.ceil(len / chunkFloats);
    chunksInSegment.push(n);
    offset += len;
    chunks += n;
  }
  return { length, worldSize, chunkFloats, segmentOffset, segmentLength, chunksInSegment, firstChunkOf, totalChunks: chunks };
}

/** [start, end) of a chunk in the flat buffer. */
export function chunkBounds(layout: RingLayout, segment: number, chunk: number): [number, number] {
  const segStart = layout.segmentOffset[segment] ?? 0;
  const segEnd = segStart + (layout.segmentLength[segment] ?? 0);
  const start = segStart + chunk * layout.chunkFloats;
  return [start, Math.min(segEnd, start + layout.chunkFloats)];
}

function mod(a: number, n: number): number {
  return ((a % n) + n) % n;
}

/**
 * Ring step (0..N-2) at which `rank` receives `segment` from its left neighbour in `phase`, or -1 when it never
 * does. Reduce-scatter: at step t a rank receives segment (rank - t - 1) and ends owning segment (rank + 1) fully
 * reduced. All-gather: at step t it receives segment (rank - t), so it never receives the one it owns.
 */
export function receiveStep(phase: RingPhase, rank: number, segment: number, worldSize: number): number {
  const t = phase === 'reduce-scatter' ? mod(rank - 1 - segment, worldSize) : mod(rank - segment, worldSize);
  return t <= worldSize - 2 ? t : -1;
}

/** The segment `rank` receives at ring step `t` of `phase` (the inverse of receiveStep). */
export function segmentReceivedAt(phase: RingPhase, rank: number, t: number, worldSize: number): number {
  return phase === 'reduce-scatter' ? mod(rank - 1 - t, worldSize) : mod(rank - t, worldSize);
}

/** Index of a received chunk in a per-step table of flags: reduce-scatter chunks first, then all-gather. */
export function chunkFlag(layout: RingLayout, phase: RingPhase, segment: number, chunk: number): number {
  return (phase === 'reduce-scatter' ? 0 : layout.totalChunks) + (layout.firstChunkOf[segment] ?? 0) + chunk;
}

/** Number of chunk frames a rank receives in one all-reduce (both phases). */
export function framesPerAllReduce(layout: RingLayout, rank: number): number {
  const N = layout.worldSize;
  let frames = 0;
  for (let s = 0; s < N; s++) {
    const chunks = layout.chunksInSegment[s] ?? 0;
    if (receiveStep('reduce-scatter', rank, s, N) >= 0) frames += chunks;
    if (receiveStep('all-gather', rank, s, N) >= 0) frames += chunks;
  }
  return frames;
}
