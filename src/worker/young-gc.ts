import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

type Collect = (options: { type: 'minor' | 'major' }) => void;

/**
 * V8's `gc` function, or undefined where it cannot be had. Exposing it after start-up is what the `expose-gc` npm
 * package does: the flag makes V8 install `gc` in contexts created afterwards, and a fresh vm context hands it over;
 * it collects the heap of the calling thread's isolate.
 */
function exposedGc(): Collect | undefined {
  try {
    setFlagsFromString('--expose-gc');
    const gc: unknown = runInNewContext('gc');
    return typeof gc === 'function' ? (gc as Collect) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Frees received frames with a scavenge instead of letting them force full collections.
 *
 * Each frame zeromq.js receives is an external Buffer, counted by V8 twice (zeromq.js reports its size, and so does
 * the ArrayBuffer), and the frames die young. V8 frees dead young ArrayBuffers only when a scavenge runs, which
 * allocation alone rarely triggers on the ring thread, so their count keeps growing until it passes V8's 64 MiB
 * external limit, which forces a full mark-compact: every 32 MiB received. A scavenge after every `thresholdBytes`
 * received (run after the all-reduce has replied, so nobody waits for it) keeps the count low and the full GCs away.
 * 8 MiB all-reduce, 2 ranks holding tfjs, ring thread, three runs each (.scratch/ar-product.ts): p50 10.05–12.67 vs
 * 12.18–16.94 ms, p90 12.7–15.7 vs 18.1–28.1 ms, CPU per call 10.4–12.5 vs 12.8–17.2 ms.
 */
export class ReceivedFrameCollector {
  private readonly collect = exposedGc();
  private received = 0;

  constructor(private readonly thresholdBytes: number) {}

  /** Whether scavenges can be requested here (false if V8 refused to expose `gc`). */
  get enabled(): boolean {
    return this.collect !== undefined;
  }

  /** Counts `bytes` received; once past the threshold, schedules a scavenge for after the current callback. */
  noteReceived(bytes: number): void {
    if (!this.collect) return;
    this.received += bytes;
    if (this.received < this.thresholdBytes) return;
    this.received = 0;
    const collect = this.collect;
    setImmediate(() => collect({ type: 'minor' }));
  }
}
