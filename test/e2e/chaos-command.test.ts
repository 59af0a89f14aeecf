import { spawn, type ChildProcess } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { runCli } from '../helpers/cli.js';

// Issue #14: `mnist-ddp chaos` signals one of the given processes every interval (seeded), prints each event, and
// does nothing unless asked for processes to pick from.

const victims: ChildProcess[] = [];

afterAll(() => {
  for (const v of victims) if (v.exitCode === null && v.signalCode === null) v.kill('SIGKILL');
});

function victim(): ChildProcess {
  const child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
  victims.push(child);
  return child;
}

describe('mnist-ddp chaos', () => {
  it('SIGKILLs a random process of --pids every --kill-every until --max-kills, one JSON line per event', async () => {
    const targets = [victim(), victim(), victim()];
    const exits = targets.map((t) => new Promise<NodeJS.Signals | null>((r) => t.once('exit', (_c, s) => r(s))));
    const result = await runCli(['chaos', '--pids', targets.map((t) => t.pid).join(','), '--kill-every', '200ms', '--max-kills', '2', '--seed', '7', '--json'], { timeoutMs: 20_000 });
    expect(result.code, result.stderr).toBe(0);
    const events = result.stdout.trim().split('\n').map((l) => JSON.parse(l) as { type: string; pid?: number; signal?: string });
    expect(events[0]).toMatchObject({ type: 'start', seed: 7 });
    const kills = events.filter((e) => e.type === 'signal');
    expect(kills).toHaveLength(2);
    expect(new Set(kills.map((k) => k.pid)).size).toBe(2);
    for (const k of kills) {
      const i = targets.findIndex((t) => t.pid === k.pid);
      expect(await exits[i]).toBe('SIGKILL');
    }
  });

  it('refuses to run without processes to pick from', async () => {
    const result = await runCli(['chaos', '--kill-every', '1s'], { timeoutMs: 20_000 });
    expect(result.code).not.toBe(0);
    expect(result.stderr).toMatch(/--pids 123,456 or --pm2-app worker/);
  });
});
