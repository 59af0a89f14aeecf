import { execFile, execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** The repository root: the bench/ scripts run their commands from there. */
export const ROOT = fileURLToPath(new URL('..', import.meta.url));

/** Deadline on every socket of a bench's own processes: a silent peer (it crashed) fails the bench instead of hanging it. */
export const PEER_TIMEOUT_MS = 30_000;

/** No bench contender runs this long; one that hangs (a crashed peer) is killed and fails the bench. */
const CONTENDER_TIMEOUT_MS = 20 * 60_000;

function lastJsonLine<T>(stdout: string): T {
  return JSON.parse(stdout.trim().split('\n').pop() ?? '') as T;
}

/** Runs a command that prints one JSON line as its last stdout line, and parses that line. */
export function runJson<T>(cmd: string, args: string[], env: NodeJS.ProcessEnv = {}): T {
  return lastJsonLine<T>(execFileSync(cmd, args, {
    cwd: ROOT, encoding: 'utf8', env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'ignore'], timeout: CONTENDER_TIMEOUT_MS,
  }));
}

/** runJson without blocking: several commands can run at the same time. */
export function runJsonAsync<T>(cmd: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<T> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { cwd: ROOT, encoding: 'utf8', env: { ...process.env, ...env }, maxBuffer: 64 << 20, timeout: CONTENDER_TIMEOUT_MS }, (err, stdout) => {
      if (err) return reject(err);
      try {
        resolve(lastJsonLine<T>(stdout));
      } catch (parseErr) {
        reject(parseErr as Error);
      }
    });
  });
}

/** Every p50/p90/p99 the bench scripts print comes from here (the product's own order statistics). */
export { median, quantile, roundTo } from '../src/shared/core/stats.js';

/**
 * Per iteration, the slower of two ranks' times: a synchronous step (or an all-reduce) ends when its slower rank
 * does. `a` and `b` are the two ranks' times of the same iterations.
 */
export function slowerRank(a: readonly number[] = [], b: readonly number[] = []): number[] {
  return a.map((t, i) => Math.max(t, b[i] ?? t));
}

export function flag(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : fallback;
}

/** Free ports for the processes a bench starts: the same helper the tests use (plain Node, no test framework). */
export { freePort, freePortRange } from '../test/helpers/net.js';
