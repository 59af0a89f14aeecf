import type { WorkerRecord } from './membership.js';

/** No message (step reply, heartbeat, anything) from `worker` for more than `silenceMs` before `now`. */
export function isSilent(worker: WorkerRecord, silenceMs: number, now = Date.now()): boolean {
  return now - worker.lastSeen > silenceMs;
}

/**
 * Resolves with the first of `workers` to fall silent for more than `silenceMs`, or with undefined at `deadline`
 * (epoch ms) when none did. It wakes only at the moments a worker could fall silent (its lastSeen + silenceMs,
 * pushed back whenever that worker is heard from) and at the deadline.
 */
export function firstSilentWorker(workers: readonly WorkerRecord[], silenceMs: number, deadline: number): Promise<WorkerRecord | undefined> {
  return new Promise((resolve) => {
    const check = (): void => {
      const now = Date.now();
      const silent = workers.find((w) => isSilent(w, silenceMs, now));
      if (silent || now >= deadline) return resolve(silent);
      const next = Math.min(deadline, ...workers.map((w) => w.lastSeen + silenceMs + 1));
      setTimeout(check, Math.max(1, next - now));
    };
    check();
  });
}

/**
 * After the control socket saw a connection drop, a worker this long without a message is taken for the one whose
 * connection dropped: alive workers heartbeat every second (issue #14).
 */
export const SUSPECT_SILENCE_MS = 1800;

/**
 * Declares workers gone whatever the run is doing (steps and evaluation included): a sweep every quarter of a
 * second over the admitted and active workers, with no deadline of its own to chain. A worker silent for the
 * heartbeat timeout is gone; for a while after the socket monitor reports a dropped connection (`suspect`), a
 * worker silent for SUSPECT_SILENCE_MS already is, so a SIGKILLed worker is found within about two seconds.
 */
export class LivenessMonitor {
  private timer: NodeJS.Timeout | undefined;
  private suspectUntil = 0;

  constructor(
    private readonly workers: () => readonly WorkerRecord[],
    private readonly settings: { heartbeatTimeoutMs: number; onGone: (w: WorkerRecord, why: string) => void },
  ) {}

  start(): void {
    this.timer ??= setInterval(() => this.sweep(), Math.min(250, this.settings.heartbeatTimeoutMs / 4));
    this.timer.unref();
  }

  /** A connection dropped somewhere: look harder for the next heartbeat timeout. */
  suspect(): void {
    this.suspectUntil = Date.now() + this.settings.heartbeatTimeoutMs;
    setTimeout(() => this.sweep(), SUSPECT_SILENCE_MS + 50).unref();
  }

  sweep(now = Date.now()): void {
    const { heartbeatTimeoutMs } = this.settings;
    const limit = now < this.suspectUntil ? Math.min(SUSPECT_SILENCE_MS, heartbeatTimeoutMs) : heartbeatTimeoutMs;
    for (const w of this.workers()) {
      // An evaluating worker's event loop runs a whole batch between two heartbeats: no shortcut for it.
      const wLimit = w.evaluating ? heartbeatTimeoutMs : limit;
      if ((w.status === 'admitted' || w.status === 'active') && isSilent(w, wLimit, now)) this.settings.onGone(w, `silent for ${now - w.lastSeen} ms`);
    }
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }
}
