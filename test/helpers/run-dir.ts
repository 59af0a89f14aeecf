import { existsSync, watch, type FSWatcher } from 'node:fs';
import { dirname } from 'node:path';

export interface RunDirWaitOptions {
  deadlineMs?: number;
  /** Appended to the timeout error: the state that explains it (the last steps, a process's stderr). */
  describeLast?: () => string;
  /** Stops waiting (the promise rejects with the signal's reason), e.g. when the process writing the run exits. */
  signal?: AbortSignal;
}

/**
 * Resolves with the first value other than undefined that `probe` returns, re-evaluating it whenever something in
 * `runDir` changes (history.jsonl gains a line, eval.json appears) — no clock, only the file events — and rejects
 * after the deadline. `runDir` need not exist yet: its parent is watched until it does. A probe that throws (a line
 * read half-written) is evaluated again on the next change; its last error is named on timeout.
 */
export function untilRecorded<T>(runDir: string, what: string, probe: () => T | undefined, opts: RunDirWaitOptions = {}): Promise<T> {
  const deadlineMs = opts.deadlineMs ?? 60_000;
  return new Promise<T>((resolve, reject) => {
    let watcher: FSWatcher | undefined;
    let watched = '';
    let lastError: unknown;
    let done = false;
    const finish = (settle: () => void): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      watcher?.close();
      opts.signal?.removeEventListener('abort', onAbort);
      settle();
    };
    const onAbort = (): void => finish(() => reject(opts.signal?.reason ?? new Error(`stopped waiting for ${what}`)));
    const evaluate = (): void => {
      if (done) return;
      try {
        // Re-check after each switch: the run directory may appear between the check and the new watch.
        for (let target = existsSync(runDir) ? runDir : dirname(runDir); target !== watched; target = existsSync(runDir) ? runDir : dirname(runDir)) {
          watcher?.close();
          watcher = watch(target, evaluate);
          watcher.on('error', (err) => finish(() => reject(err)));
          watched = target;
        }
      } catch (err) {
        finish(() => reject(err));
        return;
      }
      try {
        const value = probe();
        if (value !== undefined) finish(() => resolve(value));
      } catch (err) {
        lastError = err;
      }
    };
    const timer = setTimeout(() => {
      const cause = lastError === undefined ? '' : `: ${String(lastError)}`;
      finish(() => reject(new Error(`timed out after ${deadlineMs} ms waiting for ${what} in ${runDir}${cause}${opts.describeLast?.() ?? ''}`)));
    }, deadlineMs);
    if (opts.signal?.aborted) return onAbort();
    opts.signal?.addEventListener('abort', onAbort);
    evaluate();
  });
}
