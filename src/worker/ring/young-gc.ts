import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

export type Collect = (options: { type: 'minor' | 'major' }) => void;

/**
 * V8's `gc` function, or undefined where it cannot be had. Exposing it after start-up is what the `expose-gc` npm
 * package does: the flag makes V8 install `gc` in contexts created afterwards, and a fresh vm context hands it over;
 * it collects the heap of the calling thread's isolate.
 */
let exposed: { gc: Collect | undefined } | undefined;

function exposedGc(): Collect | undefined {
  if (!exposed) {
    try {
      setFlagsFromString('--expose-gc');
      const gc: unknown = runInNewContext('gc');
      exposed = { gc: typeof gc === 'function' ? (gc as Collect) : undefined };
    } catch {
      exposed = { gc: undefined };
    }
  }
  return exposed.gc;
}

/**
 * Frees received frames with a scavenge instead of letting them force full collections.
 *
 * Each frame zeromq.js receives is an external Buffer, counted by V8 twice (zeromq.js reports its size, and so does
 * the ArrayBuffer), and the frames die young. V8 frees dead young ArrayBuffers only when a scavenge runs, and nothing
 * makes one run in time: their count grows until it passes V8's 64 MiB external limit, which forces a full
 * mark-compact, every 32 MiB received. In a worker that is a mark-compact of a heap holding tfjs, which is
 * expensive. A scavenge (young generation only: cheap whatever the old generation holds) after every
 * `thresholdBytes` received keeps the count low and the full GCs away. It is scheduled with setImmediate, after the
 * all-reduce has resolved and its caller's continuation ran. `bench/allreduce.ts` measures the ring with and without
 * the scavenges (scavengeEveryBytes 0). The ring stays on the main thread: on a thread of its own (a heap of its
 * own, no tfjs to mark) the hand-offs between threads cost more than the full GCs they avoid.
 */
export class ReceivedFrameCollector {
  private readonly collect: Collect | undefined;
  private received = 0;

  /** `collect` defaults to V8's own gc (looked up once per process); tests pass a recorder. */
  constructor(private readonly thresholdBytes: number, collect: Collect | undefined = exposedGc()) {
    this.collect = collect;
  }

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
