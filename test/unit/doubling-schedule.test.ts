import { describe, expect, it } from 'vitest';
import { doublingSchedule } from '../../src/shared/wire/doubling-schedule.js';

// Issue #16 item 4: recursive doubling's schedule, run round by round on multisets of contributions. Every rank must
// end with each rank's contribution exactly once, every send must meet a receive in the same round, and the hop count
// must be log2(N) (plus 2 to fold in the ranks above a power of two).

/** Runs every rank's schedule on "which ranks' contributions, how many times" and returns each rank's final multiset. */
function simulate(worldSize: number): number[][] {
  const schedules = [...Array(worldSize).keys()].map((r) => doublingSchedule(r, worldSize));
  const held = schedules.map((_, r) => [r]);
  const lastRound = Math.max(...schedules.flatMap((s) => s.rounds.map((r) => r.round)));
  for (let round = 0; round <= lastRound; round++) {
    // What each sender sends this round: its partial before the round's additions.
    const sent = new Map<string, number[]>();
    schedules.forEach((s, r) => {
      const step = s.rounds.find((x) => x.round === round);
      if (step?.sendTo !== undefined) sent.set(`${r}->${step.sendTo}`, [...held[r]!]);
    });
    schedules.forEach((s, r) => {
      const step = s.rounds.find((x) => x.round === round);
      if (step?.receiveFrom === undefined) return;
      const got = sent.get(`${step.receiveFrom}->${r}`);
      expect(got, `round ${round}: rank ${r} waits for rank ${step.receiveFrom}, which sends it nothing`).toBeDefined();
      sent.delete(`${step.receiveFrom}->${r}`);
      held[r] = step.receiveAs === 'take' ? got! : [...held[r]!, ...got!];
    });
    expect([...sent.keys()], `round ${round}: sends nobody receives`).toEqual([]);
  }
  return held.map((h) => [...h].sort((a, b) => a - b));
}

describe('recursive doubling schedule', () => {
  it.each([1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 16, 17])('N=%i: every rank ends with every contribution exactly once', (n) => {
    const all = [...Array(n).keys()];
    for (const final of simulate(n)) expect(final).toEqual(all);
  });

  it('takes log2(N) hops at powers of two and two more otherwise, against the ring\'s 2(N-1)', () => {
    expect([1, 2, 3, 4, 5, 8, 9].map((n) => doublingSchedule(0, n).hops)).toEqual([0, 1, 3, 2, 4, 3, 5]);
  });

  it('names the partners each rank sends to and admits, and pairs the folded ranks with the even rank below them', () => {
    // N=3: p=2, one extra rank. Rank 1 folds into rank 0; ranks 0 and 2 double.
    expect(doublingSchedule(0, 3)).toMatchObject({ sendsTo: [2, 1], receivesFrom: [1, 2] });
    expect(doublingSchedule(1, 3)).toMatchObject({ sendsTo: [0], receivesFrom: [0] });
    expect(doublingSchedule(2, 3)).toMatchObject({ sendsTo: [0], receivesFrom: [0] });
    // N=4: partners at distance 1, then 2.
    expect(doublingSchedule(1, 4).rounds.map((r) => r.sendTo)).toEqual([0, 3]);
  });

  it('refuses a rank outside the world', () => {
    expect(() => doublingSchedule(3, 3)).toThrow(RangeError);
    expect(() => doublingSchedule(0, 0)).toThrow(RangeError);
  });
});
