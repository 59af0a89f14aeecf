/** Thrown from a probe to stop polling at once (a bad query, a process gone) instead of retrying to the deadline. */
export class StopPolling extends Error {}

/**
 * Calls `probe` every 250 ms until it returns a value other than undefined, and returns that. A probe that throws
 * is retried (the service may not be up yet) unless it throws StopPolling. On timeout the error names `what`, the
 * probe's last error and `describeLast()` (the state that explains the failure: logs, the last records read).
 */
export async function until<T>(
  what: string,
  probe: () => T | undefined | Promise<T | undefined>,
  deadlineMs = 30_000,
  describeLast: () => string = () => '',
): Promise<T> {
  const end = Date.now() + deadlineMs;
  let last: unknown;
  while (Date.now() < end) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (err) {
      if (err instanceof StopPolling) throw new Error(`${err.message}${describeLast()}`);
      last = err;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`timed out after ${deadlineMs} ms waiting for ${what}${last ? `: ${String(last)}` : ''}${describeLast()}`);
}
