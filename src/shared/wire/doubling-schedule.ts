/**
 * Recursive doubling (Thakur, Rabenseifner & Gropp 2005): a latency-optimal all-reduce for small buffers. Every rank
 * exchanges its whole partial sum with one partner per round and adds the partner's, so the sum is complete after
 * log2(N) rounds where the ring needs 2(N−1) hops. A world size that is not a power of two first folds its extra
 * ranks in: with p the largest power of two ≤ N and e = N − p, each odd rank below 2e hands its buffer to the even
 * rank below it (round `pre`), the p remaining ranks double, and each even rank below 2e hands the sum back (round
 * `post`). Rounds are numbered 0 (`pre`), 1…log2(p) (doubling), log2(p)+1 (`post`), the same on every rank.
 *
 * Every rank ends with bit-identical sums: in each doubling round both partners add the same two partial sums (float
 * addition is commutative), and a folded rank receives the final sum as it is.
 */

/** What one rank does in one round: send its partial to `sendTo`, and/or receive one from `receiveFrom` (then add it, or take it as the result). */
export interface DoublingRound {
  readonly round: number;
  readonly sendTo?: number;
  readonly receiveFrom?: number;
  /** `add`: sum the received partial into this rank's; `take`: it is the final sum (a folded rank's `post`). */
  readonly receiveAs?: 'add' | 'take';
}

export interface DoublingSchedule {
  readonly worldSize: number;
  /** The rounds this rank takes part in, in order; rounds it sits out are omitted. */
  readonly rounds: readonly DoublingRound[];
  /** Every rank this one sends to (its sockets), and every rank it receives from (its inbox admits exactly these). */
  readonly sendsTo: readonly number[];
  readonly receivesFrom: readonly number[];
  /** Hops on the critical path: log2(p), plus 2 when N is not a power of two. */
  readonly hops: number;
}

function largestPowerOfTwoAtMost(n: number): number {
  let p = 1;
  while (p * 2 <= n) p *= 2;
  return p;
}

export function doublingSchedule(rank: number, worldSize: number): DoublingSchedule {
  if (!Number.isInteger(worldSize) || worldSize < 1) throw new RangeError(`worldSize must be a positive integer, got ${worldSize}`);
  if (!Number.isInteger(rank) || rank < 0 || rank >= worldSize) throw new RangeError(`rank must be in [0, ${worldSize}), got ${rank}`);
  const p = largestPowerOfTwoAtMost(worldSize);
  const extra = worldSize - p;
  const levels = Math.log2(p);
  const post = levels + 1;
  const rounds: DoublingRound[] = [];
  // Ranks below 2·extra pair up; the odd one of each pair is folded into the even one.
  const folded = rank < 2 * extra && rank % 2 === 1;
  const holdsPair = rank < 2 * extra && rank % 2 === 0;
  if (folded) {
    rounds.push({ round: 0, sendTo: rank - 1 });
    rounds.push({ round: post, receiveFrom: rank - 1, receiveAs: 'take' });
  } else {
    if (holdsPair) rounds.push({ round: 0, receiveFrom: rank + 1, receiveAs: 'add' });
    // The doubling ranks, renumbered 0…p−1: pair holders first, then the ranks above 2·extra.
    const virtual = holdsPair ? rank / 2 : rank - extra;
    const real = (v: number): number => (v < extra ? 2 * v : v + extra);
    for (let k = 0; k < levels; k++) {
      const partner = real(virtual ^ (1 << k));
      rounds.push({ round: k + 1, sendTo: partner, receiveFrom: partner, receiveAs: 'add' });
    }
    if (holdsPair) rounds.push({ round: post, sendTo: rank + 1 });
  }
  const unique = (xs: (number | undefined)[]): number[] => [...new Set(xs.filter((x): x is number => x !== undefined))];
  return {
    worldSize,
    rounds,
    sendsTo: unique(rounds.map((r) => r.sendTo)),
    receivesFrom: unique(rounds.map((r) => r.receiveFrom)),
    hops: levels + (extra > 0 ? 2 : 0),
  };
}
