import { describe, expect, it } from 'vitest';
import { chunkFlag, framesPerAllReduce, receiveStep, ringLayout, segmentReceivedAt } from '../../src/worker/ring/topology.js';

describe('ring topology', () => {
  it.each([2, 3, 4, 5])('with %i ranks, segmentReceivedAt inverts receiveStep and every rank receives N-1 segments per phase', (n) => {
    for (const phase of ['reduce-scatter', 'all-gather'] as const) {
      for (let rank = 0; rank < n; rank++) {
        const received = new Set<number>();
        for (let t = 0; t < n - 1; t++) {
          const segment = segmentReceivedAt(phase, rank, t, n);
          expect(receiveStep(phase, rank, segment, n)).toBe(t);
          received.add(segment);
        }
        expect(received.size).toBe(n - 1);
        // Reduce-scatter never brings segment `rank` (this rank's partial sum of it leaves first); all-gather never
        // brings (rank + 1) % n, the segment this rank finished reducing.
        const never = phase === 'reduce-scatter' ? rank : (rank + 1) % n;
        expect(receiveStep(phase, rank, never, n)).toBe(-1);
      }
    }
  });

  it('numbers every (phase, segment, chunk) with a distinct flag, and framesPerAllReduce counts what a rank receives', () => {
    const layout = ringLayout(1_000, 3, 64);
    const flags = new Set<number>();
    for (const phase of ['reduce-scatter', 'all-gather'] as const) {
      for (let s = 0; s < 3; s++) for (let c = 0; c < layout.chunksInSegment[s]!; c++) flags.add(chunkFlag(layout, phase, s, c));
    }
    expect(flags.size).toBe(2 * layout.totalChunks);
    expect(Math.min(...flags)).toBe(0);
    expect(Math.max(...flags)).toBe(2 * layout.totalChunks - 1);
    // A rank receives every segment but its own in reduce-scatter and every segment but (rank + 1) % N in
    // all-gather: closed form, on segments of different chunk counts (10 floats in chunks of 3: 2, 1 and 1 chunks).
    for (const l of [layout, ringLayout(10, 3, 3)]) {
      for (let rank = 0; rank < 3; rank++) {
        const chunks = l.chunksInSegment;
        expect(framesPerAllReduce(l, rank), `rank ${rank}`).toBe(2 * l.totalChunks - chunks[rank]! - chunks[(rank + 1) % 3]!);
      }
    }
  });
});
