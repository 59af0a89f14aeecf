import { describe, expect, it } from 'vitest';
import { resolveConfig, trainConfigSchema } from '../../src/shared/core/config.js';
import { isMnistDdpError } from '../../src/shared/core/errors.js';
import { globalBatch, learningRate, peakLearningRate, type ScheduleConfig } from '../../src/shared/train/lr-schedule.js';

// Linear learning-rate scaling with warm-up (issue #13 item 4, "GPU-sized batches"). The values are dyadic (lr 1/16,
// batch sizes and references powers of two or small multiples), so every expected number is exact in float64 and
// compared with toBe.

const base: ScheduleConfig = {
  schedule: 'constant', lr: 0.0625, gamma: 0.5, stepEpochs: 1, minLrFactor: 0, warmupSteps: 0,
  lrScaling: 'linear', lrReferenceBatch: 256, batchSize: 1024,
};

describe('linear learning-rate scaling (Goyal et al. 2017)', () => {
  it('scales the peak by global batch / reference batch, the global batch being batch size × world size', () => {
    expect(globalBatch(base, 3)).toBe(3072);
    expect(peakLearningRate(base, 1)).toBe(0.25); // 1/16 × 1024/256
    expect(peakLearningRate(base, 3)).toBe(0.75); // 1/16 × 3072/256
    expect(peakLearningRate({ ...base, batchSize: 64 }, 2)).toBe(0.03125); // below the reference: scaled down
    expect(peakLearningRate({ ...base, batchSize: 256 }, 1)).toBe(0.0625); // at the reference: lr as given
  });

  it('leaves lr as given under `none`, whatever the batch and world', () => {
    const none = { ...base, lrScaling: 'none' as const };
    for (const world of [1, 2, 7]) expect(peakLearningRate(none, world)).toBe(0.0625);
    expect(learningRate(none, 0.5, 2, 500, 4)).toBe(0.0625);
  });

  it('ramps warm-up linearly up to the scaled peak, not to the unscaled lr', () => {
    const c = { ...base, warmupSteps: 4 };
    // world 2: peak 1/16 × 2048/256 = 0.5; steps 0..3 take 1/4..4/4 of it, then the peak.
    expect([0, 1, 2, 3, 4, 100].map((step) => learningRate(c, 0, 1, step, 2))).toEqual([0.125, 0.25, 0.375, 0.5, 0.5, 0.5]);
    expect([0, 3].map((step) => learningRate({ ...c, lrScaling: 'none' }, 0, 1, step, 2))).toEqual([0.015625, 0.0625]);
  });

  it('scales the whole schedule: step decay and the cosine floor are fractions of the scaled peak', () => {
    const step = { ...base, schedule: 'step' as const };
    expect([0, 0.99, 1, 2.5].map((p) => learningRate(step, p, 3, 1000, 2))).toEqual([0.5, 0.5, 0.25, 0.125]);
    const cosine = { ...base, schedule: 'cosine' as const, minLrFactor: 0.25 };
    // Start: the peak; middle: halfway between peak and floor; end: the floor, 0.25 × 0.5.
    expect(learningRate(cosine, 0, 2, 1000, 2)).toBe(0.5);
    expect(learningRate(cosine, 1, 2, 1000, 2)).toBeCloseTo(0.3125, 15);
    expect(learningRate(cosine, 2, 2, 1000, 2)).toBe(0.125);
  });

  it('follows the world size when it changes mid-run, without restarting warm-up or decay', () => {
    // The rule (peakLearningRate): each step's peak is its own world's; the schedule position carries on. Here
    // warm-up has 8 steps; at step 3 the world grows from 2 to 3 ranks, at step 6 it shrinks to 1.
    const c = { ...base, warmupSteps: 8 };
    const worldAt = (step: number): number => (step < 3 ? 2 : step < 6 ? 3 : 1);
    const lrs = Array.from({ length: 10 }, (_, step) => learningRate(c, 0, 1, step, worldAt(step)));
    // peaks 0.5, 0.75, 0.25; warm-up fraction (step + 1) / 8 throughout.
    expect(lrs).toEqual([0.0625, 0.125, 0.1875, 0.375, 0.46875, 0.5625, 0.21875, 0.25, 0.25, 0.25]);
  });
});

describe('--lr-scaling and --lr-reference-batch', () => {
  it('default to none and 64: a run means what it meant before the flags existed', () => {
    const config = trainConfigSchema.parse({});
    expect([config.lrScaling, config.lrReferenceBatch]).toEqual(['none', 64]);
    // At the defaults (batch 64, one worker), switching the rule on changes nothing either.
    expect(peakLearningRate({ ...config, lrScaling: 'linear' }, 1)).toBe(config.lr);
  });

  it('refuses an unknown rule and a reference batch below 1, naming the flag', () => {
    const refusal = (flags: Record<string, unknown>): string => {
      try {
        resolveConfig(trainConfigSchema, { flags });
      } catch (err) {
        if (isMnistDdpError(err) && err.code === 'CONFIG_INVALID') return err.message;
        throw err;
      }
      throw new Error(`accepted ${JSON.stringify(flags)}`);
    };
    expect(refusal({ lrScaling: 'sqrt' })).toMatch(/^invalid lrScaling \(--lr-scaling\) = "sqrt"/);
    expect(refusal({ lrReferenceBatch: '0' })).toMatch(/^invalid lrReferenceBatch \(--lr-reference-batch\) = "0"/);
    expect(resolveConfig(trainConfigSchema, { env: { lrScaling: 'linear', lrReferenceBatch: '256' } })).toMatchObject({ lrScaling: 'linear', lrReferenceBatch: 256 });
  });
});
