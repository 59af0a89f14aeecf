import { describe, expect, it } from 'vitest';
import { detectAnomaly, gradientNorm, healthLength, HEALTH_SLOTS_PER_RANK, MIN_SAMPLES_FOR_FACTOR, readHealth, writeHealth, type RankHealth } from '../../src/shared/train/gradient-health.js';
import type { ParamLayout } from '../../src/shared/model/layout.js';

// Issue #15 item 5: a rank whose gradient norm is far outside the others' (or whose loss is not finite) is named.

const ok = (rank: number, norm: number, samples = 20): RankHealth => ({ rank, norm, samples, lossFinite: true });
const sumOf = (h: readonly RankHealth[]) => h.reduce((a, x) => a + x.norm, 0);

describe('detectAnomaly', () => {
  it('names nobody among ranks of similar norm, shard sizes included (per-sample norms)', () => {
    const health = [ok(0, 3.1, 22), ok(1, 2.4, 21), ok(2, 0.2, 1), ok(3, 2.9, 21)];
    expect(detectAnomaly(health, 100, 5)).toBeUndefined();
  });

  it('names the one rank whose norm per sample is beyond factor x the median, and only it', () => {
    const health = [ok(0, 3), ok(1, 1e31), ok(2, 2.5)];
    const anomaly = detectAnomaly(health, 100, 1e31);
    expect(anomaly?.ranks).toEqual([1]);
    expect(anomaly?.reasons[0]).toMatch(/^rank 1 has a gradient norm per sample of 5\.00e\+29/);
    // Just under the factor: not named.
    expect(detectAnomaly([ok(0, 1), ok(1, 99), ok(2, 1)], 100, 99)).toBeUndefined();
    expect(detectAnomaly([ok(0, 1), ok(1, 101), ok(2, 1)], 100, 101)?.ranks).toEqual([1]);
  });

  it('judges a shard of under MIN_SAMPLES_FOR_FACTOR samples against factor squared (an epoch tail split 2/2/1)', () => {
    expect(MIN_SAMPLES_FOR_FACTOR).toBe(4);
    expect(detectAnomaly([ok(0, 0.02, 2), ok(1, 0.02, 2), ok(2, 0.9, 1)], 100, 0.9)).toBeUndefined(); // 90x: legitimate
    expect(detectAnomaly([ok(0, 0.02, 2), ok(1, 0.02, 2), ok(2, 1e29, 1)], 100, 1e29)?.ranks).toEqual([2]);
  });

  it('needs three ranks with samples to compare norms; a rank without samples takes no part', () => {
    expect(detectAnomaly([ok(0, 1), ok(1, 1e31)], 100, 1e31)).toBeUndefined();
    expect(detectAnomaly([ok(0, 1), ok(1, 1e31), ok(2, 0, 0)], 100, 1e31)).toBeUndefined();
    // A rank with an empty shard legitimately sends zeros, whatever the others' norms.
    expect(detectAnomaly([ok(0, 1), ok(1, 2), ok(2, 1), ok(3, 0, 0)], 10, 3)).toBeUndefined();
  });

  it('names a rank with a non-finite loss (also with two ranks) and one that sends a gradient without samples', () => {
    expect(detectAnomaly([ok(0, 1), { ...ok(1, 1), lossFinite: false }], 100, 2)).toEqual({ ranks: [1], reasons: ['rank 1 has a loss that is not finite'] });
    expect(detectAnomaly([ok(0, 1), ok(1, 5, 0)], 100, 6)?.ranks).toEqual([1]);
    expect(detectAnomaly([ok(0, -4), ok(1, 1), ok(2, 1)], 100, 1)?.ranks).toEqual([0]);
  });

  it('leaves a non-finite gradient to the NaN guard (NON_FINITE_GRADIENT): no verdict', () => {
    expect(detectAnomaly([ok(0, 1), ok(1, Number.NaN), ok(2, 1)], 100, 1)).toBeUndefined();
    expect(detectAnomaly([ok(0, 1), ok(1, 1), ok(2, 1)], 100, Number.POSITIVE_INFINITY)).toBeUndefined();
  });

  it('flags, without naming anyone, a sum whose norm exceeds what the ranks reported (a rank under-reported)', () => {
    const health = [ok(0, 3), ok(1, 2), ok(2, 4)];
    expect(detectAnomaly(health, 100, sumOf(health))).toBeUndefined(); // the triangle inequality's bound itself
    const anomaly = detectAnomaly(health, 100, 1e30);
    expect(anomaly?.ranks).toEqual([]);
    expect(anomaly?.reasons[0]).toMatch(/misreported its norm/);
  });
});

describe('health slots', () => {
  const layout = { paramCount: 3, lossIndex: 4, countIndex: 5, bufferLength: 6, trainable: [], synced: [], checksum: '' } as ParamLayout;

  it('add nothing for one rank and three floats per rank otherwise', () => {
    expect(healthLength(1)).toBe(0);
    expect(healthLength(4)).toBe(4 * HEALTH_SLOTS_PER_RANK);
  });

  it('survive the SUM: each rank writes only its own slots, and every rank reads every report back', () => {
    const worldSize = 3;
    const sum = new Float32Array(layout.bufferLength + healthLength(worldSize));
    const contributions = [[3, 4, 0, 7, 1], [1e20, 0, 0, 0, 1], [0, 0, 0, 0, 0]];
    const losses = [1.5, 2, Number.POSITIVE_INFINITY];
    contributions.forEach((grad, rank) => {
      const buf = new Float32Array(sum.length);
      buf.set(grad.slice(0, 4));
      buf[layout.lossIndex] = losses[rank]!;
      writeHealth(buf, layout, rank, 10 + rank);
      buf.forEach((v, i) => (sum[i] = sum[i]! + v));
    });
    expect(gradientNorm(new Float32Array([3, 4]), 2)).toBe(5);
    expect(readHealth(sum, layout, worldSize)).toEqual([
      { rank: 0, norm: 5, samples: 10, lossFinite: true },
      { rank: 1, norm: Math.fround(1e20), samples: 11, lossFinite: true }, // squared in float64: no overflow
      { rank: 2, norm: 0, samples: 12, lossFinite: false },
    ]);
  });
});
