import { permutationFor } from './rng.js';

/**
 * Exactly-once sharding. Each epoch has one seeded order of the training indices. A step consumes the next
 * `count` entries of that order (count = worldSize × batchSize, or fewer at the end of the epoch), and the ranks
 * split that slice into contiguous pieces whose sizes differ by at most one. The coordinator only tracks a cursor
 * into the epoch order, so when the world size changes between two steps the remaining samples are simply split
 * among the new ranks: no sample is dropped, padded or used twice.
 */
export function epochOrder(train: Int32Array, seed: number, epoch: number): Int32Array {
  const perm = permutationFor(seed, epoch, train.length);
  const order = new Int32Array(train.length);
  for (let i = 0; i < perm.length; i++) order[i] = train[perm[i]!]!;
  return order;
}

/** [start, end) positions in the epoch order that `rank` of `worldSize` handles for a step at `cursor`. */
export function rankSlice(cursor: number, count: number, rank: number, worldSize: number): [number, number] {
  return [cursor + Math.floor((rank * count) / worldSize), cursor + Math.floor(((rank + 1) * count) / worldSize)];
}

export function stepCount(epochSize: number, cursor: number, worldSize: number, batchSize: number): number {
  return Math.min(worldSize * batchSize, epochSize - cursor);
}

/** Contiguous evaluation ranges per rank, exact counts, no padding. */
export function evalSlice(total: number, rank: number, worldSize: number): [number, number] {
  return rankSlice(0, total, rank, worldSize);
}
