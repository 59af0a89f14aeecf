import { spawn, spawnSync } from 'node:child_process';

/** Whether `promtool` (Debian: apt-get install prometheus) is on PATH; tests that need it skip without it. */
export const HAS_PROMTOOL = spawnSync('promtool', ['--version']).status === 0;

/** `promtool check metrics` on a text exposition: its exit code and everything it printed (empty when clean). */
export function promtoolCheckMetrics(body: string, timeoutMs = 20_000): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('promtool', ['check', 'metrics'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (c: Buffer) => (output += c.toString()));
    child.stderr.on('data', (c: Buffer) => (output += c.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
    child.stdin.end(body);
  });
}
