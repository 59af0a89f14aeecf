import { describe, expect, it } from 'vitest';
import { runCli } from '../helpers/cli.js';

/**
 * User errors through the shipped CLI (real processes): one line `mnist-ddp: error [CODE]: message` on stderr, exit
 * code 2 for configuration errors and 1 for everything else, and no stack trace.
 */
function expectOneLineError(stderr: string, code: string): string {
  const lines = stderr.trim().split('\n').filter((l) => l.includes('error ['));
  expect(lines, stderr).toHaveLength(1);
  expect(lines[0]).toMatch(new RegExp(`^mnist-ddp: error \\[${code}\\]: `));
  expect(stderr).not.toMatch(/\n\s+at /);
  return lines[0]!;
}

describe.concurrent('CLI errors', () => {
  it('train --batch-size abc: CONFIG_INVALID naming the flag, exit 2', async () => {
    const r = await runCli(['train', '--batch-size', 'abc', '--run-dir', '/nonexistent/never-created'], { timeoutMs: 30_000 });
    expect(r.code).toBe(2);
    const line = expectOneLineError(r.stderr, 'CONFIG_INVALID');
    expect(line).toContain('batchSize (--batch-size) = "abc"');
  });

  it('MNIST_DDP_EPOCHS=0 train: CONFIG_INVALID naming the environment variable, exit 2', async () => {
    const r = await runCli(['train'], { env: { MNIST_DDP_EPOCHS: '0' }, timeoutMs: 30_000 });
    expect(r.code).toBe(2);
    expect(expectOneLineError(r.stderr, 'CONFIG_INVALID')).toContain('epochs (MNIST_DDP_EPOCHS)');
  });

  it('bench --backend cuda: BACKEND_UNKNOWN listing the valid backends, exit 2', async () => {
    const r = await runCli(['bench', '--backend', 'cuda'], { timeoutMs: 30_000 });
    expect(r.code).toBe(2);
    const line = expectOneLineError(r.stderr, 'BACKEND_UNKNOWN');
    expect(line).toContain('cuda');
    expect(line).toContain('auto, tensorflow, wasm, cpu');
    expect(r.stdout).toBe('');
  });

  it('eval --checkpoint /nonexistent: CHECKPOINT_INVALID naming the directory, exit 1', async () => {
    const r = await runCli(['eval', '--checkpoint', '/nonexistent', '--backend', 'wasm'], { timeoutMs: 60_000 });
    expect(r.code).toBe(1);
    expect(expectOneLineError(r.stderr, 'CHECKPOINT_INVALID')).toContain('/nonexistent');
  });
});
