import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** Shared by the bench/ scripts: run a command that prints one JSON line as its last stdout line. */
export const ROOT = fileURLToPath(new URL('..', import.meta.url));

export function runJson<T>(cmd: string, args: string[], env: NodeJS.ProcessEnv = {}): T {
  const out = execFileSync(cmd, args, { cwd: ROOT, encoding: 'utf8', env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'ignore'] });
  const last = out.trim().split('\n').pop() ?? '';
  return JSON.parse(last) as T;
}

export function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

export function flag(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : fallback;
}
