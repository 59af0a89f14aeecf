import { execFile, execFileSync } from 'node:child_process';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { fileURLToPath } from 'node:url';

/** Shared by the bench/ scripts: run a command that prints one JSON line as its last stdout line. */
export const ROOT = fileURLToPath(new URL('..', import.meta.url));

export function runJson<T>(cmd: string, args: string[], env: NodeJS.ProcessEnv = {}): T {
  const out = execFileSync(cmd, args, { cwd: ROOT, encoding: 'utf8', env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'ignore'] });
  const last = out.trim().split('\n').pop() ?? '';
  return JSON.parse(last) as T;
}

/** runJson without blocking: several commands can run at the same time. */
export function runJsonAsync<T>(cmd: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<T> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { cwd: ROOT, encoding: 'utf8', env: { ...process.env, ...env }, maxBuffer: 64 << 20 }, (err, stdout) => {
      if (err) return reject(err);
      try {
        resolve(JSON.parse(stdout.trim().split('\n').pop() ?? '') as T);
      } catch (parseErr) {
        reject(parseErr as Error);
      }
    });
  });
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

function listenOn(port: number): Promise<Server | undefined> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(undefined));
    server.listen(port, '127.0.0.1', () => resolve(server));
  });
}

/**
 * First port p of `count` consecutive ports on 127.0.0.1 that are all free now (worker i serves its /metrics on
 * base + NODE_APP_INSTANCE, as under pm2). The tests have their own copy (test/helpers/net.ts): bench/ stands alone.
 */
export async function freePortRange(count: number): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const first = await listenOn(0);
    if (!first) continue;
    const base = (first.address() as AddressInfo).port;
    const held = [first];
    for (let i = 1; i < count && held.length === i; i++) {
      const next = base + i <= 65535 ? await listenOn(base + i) : undefined;
      if (next) held.push(next);
    }
    await Promise.all(held.map((s) => new Promise<void>((r) => s.close(() => r()))));
    if (held.length === count) return base;
  }
  throw new Error(`no run of ${count} free ports found`);
}

export function freePort(): Promise<number> {
  return freePortRange(1);
}
