import { constants, PerformanceObserver, type PerformanceEntry } from 'node:perf_hooks';
import { describe, expect, it, vi } from 'vitest';
import { ReceivedFrameCollector, type Collect } from '../../src/worker/ring/young-gc.js';

const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe('ReceivedFrameCollector', () => {
  it('requests one scavenge each time the received bytes pass the threshold, after the current callback', async () => {
    const calls: Parameters<Collect>[0][] = [];
    const collector = new ReceivedFrameCollector(1000, (options) => calls.push(options));
    collector.noteReceived(600);
    await nextTurn();
    expect(calls).toEqual([]); // below the threshold
    collector.noteReceived(600); // 1200: past it
    expect(calls).toEqual([]); // not inside the caller's callback
    collector.noteReceived(999); // counted from 0 again: below
    await nextTurn();
    expect(calls).toEqual([{ type: 'minor' }]);
    collector.noteReceived(1); // 1000: past it again
    await nextTurn();
    expect(calls).toEqual([{ type: 'minor' }, { type: 'minor' }]);
  });

  // V8 (Node 24's 13.x) finishes a requested scavenge as a mark-compact when major incremental marking is underway,
  // which a loaded suite makes likely: a forced collection of either kind is V8's own gc at work.
  it('gets V8\'s own gc, which runs a real, forced collection', async () => {
    const collector = new ReceivedFrameCollector(1);
    expect(collector.enabled).toBe(true);
    const forced: PerformanceEntry[] = [];
    const observer = new PerformanceObserver((list) => {
      // Forced: requested through gc(), not one V8 started by itself meanwhile.
      for (const e of list.getEntries()) {
        const detail = (e as PerformanceEntry & { detail?: { kind?: number; flags?: number } }).detail;
        const young = detail?.kind === constants.NODE_PERFORMANCE_GC_MINOR;
        const full = detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR;
        if ((young || full) && ((detail?.flags ?? 0) & constants.NODE_PERFORMANCE_GC_FLAGS_FORCED) !== 0) forced.push(e);
      }
    });
    observer.observe({ entryTypes: ['gc'] });
    try {
      collector.noteReceived(1);
      await vi.waitFor(() => expect(forced.length).toBeGreaterThanOrEqual(1), { timeout: 5000 });
    } finally {
      observer.disconnect();
    }
  });
});
