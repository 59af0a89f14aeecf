import { constants, PerformanceObserver, type PerformanceEntry } from 'node:perf_hooks';
import { describe, expect, it } from 'vitest';
import { ReceivedFrameCollector } from '../../src/worker/young-gc.js';

/** GC entries observed until `done` resolves (observer callbacks arrive asynchronously). */
async function gcEntriesDuring(run: () => Promise<void>): Promise<PerformanceEntry[]> {
  const entries: PerformanceEntry[] = [];
  const observer = new PerformanceObserver((list) => entries.push(...list.getEntries()));
  observer.observe({ entryTypes: ['gc'] });
  await run();
  await new Promise((resolve) => setTimeout(resolve, 50));
  observer.disconnect();
  return entries;
}

const scavenges = (entries: PerformanceEntry[]): number =>
  entries.filter((e) => (e as PerformanceEntry & { detail?: { kind?: number } }).detail?.kind === constants.NODE_PERFORMANCE_GC_MINOR).length;

describe('ReceivedFrameCollector', () => {
  it('runs one scavenge, after the current callback, each time the received bytes pass the threshold', async () => {
    const collector = new ReceivedFrameCollector(1000);
    expect(collector.enabled).toBe(true);
    const entries = await gcEntriesDuring(async () => {
      collector.noteReceived(600); // below the threshold: nothing
      await new Promise((resolve) => setImmediate(resolve));
      collector.noteReceived(600); // 1200: one scavenge
      collector.noteReceived(999); // counted from 0 again: still below
      await new Promise((resolve) => setImmediate(resolve));
      await new Promise((resolve) => setImmediate(resolve));
    });
    expect(scavenges(entries)).toBe(1);
  });
});
