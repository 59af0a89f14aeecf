import { describe, expect, it } from 'vitest';
import { FutureStepStash, MAX_STASHED_BYTES, MAX_STASH_STEPS_AHEAD } from '../../src/worker/ring/stash.js';

// Issue #15 item 4: the stash for future steps is bounded in bytes and in how far ahead it accepts.
const frame = (step: number, floats = 4) => ({ step, data: new Float32Array(floats) });

describe('FutureStepStash', () => {
  it('keeps frames up to MAX_STASH_STEPS_AHEAD steps ahead and refuses further ones', () => {
    const stash = new FutureStepStash<ReturnType<typeof frame>>();
    expect(stash.offer(frame(11), 10)).toBeUndefined();
    expect(stash.offer(frame(10 + MAX_STASH_STEPS_AHEAD), 10)).toBeUndefined();
    expect(stash.offer(frame(11 + MAX_STASH_STEPS_AHEAD), 10)).toMatch(/more than 2 steps ahead/);
    expect(stash.size).toBe(2);
  });

  it('accepts any step before the rank started its first one (a resumed run starts anywhere)', () => {
    const stash = new FutureStepStash<ReturnType<typeof frame>>();
    expect(stash.offer(frame(1_000_000), -1)).toBeUndefined();
  });

  it('is bounded in bytes by the larger of its limit and twice the largest buffer reduced', () => {
    const stash = new FutureStepStash<ReturnType<typeof frame>>(2, 64);
    expect(stash.offer(frame(1, 16), 0)).toBeUndefined(); // 64 bytes: at the limit
    expect(stash.offer(frame(1, 1), 0)).toMatch(/would exceed 64 bytes/);
    stash.noteBuffer(100); // the bound is now 200 bytes
    expect(stash.offer(frame(1, 34), 0)).toBeUndefined();
    expect(stash.byteLength).toBe(200);
    expect(stash.offer(frame(1, 1), 0)).toMatch(/would exceed 200 bytes/);
    expect(MAX_STASHED_BYTES).toBe(64 * 1024 * 1024);
  });

  it('hands back the started step in arrival order, drops stale and too-far frames, keeps the rest', () => {
    const stash = new FutureStepStash<ReturnType<typeof frame>>(2, 1 << 20);
    const a = frame(5), b = frame(6), c = frame(5, 8), d = frame(4), e = frame(9);
    for (const f of [a, b, c, d, e]) expect(stash.offer(f, -1)).toBeUndefined();
    const { current, dropped } = stash.take(5);
    expect(current).toEqual([a, c]);
    expect(current[0]).toBe(a);
    expect(dropped.map((x) => [x.frame, x.reason])).toEqual([[d, 'stale'], [e, 'unexpected']]);
    expect(stash.size).toBe(1);
    expect(stash.byteLength).toBe(b.data.byteLength);
    expect(stash.take(6).current).toEqual([b]);
    expect(stash.byteLength).toBe(0);
  });
});
