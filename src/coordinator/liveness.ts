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
