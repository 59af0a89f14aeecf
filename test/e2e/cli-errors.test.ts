import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runCli } from '../helpers/cli.js';

const work = mkdtempSync(join(tmpdir(), 'mnist-ddp-cli-errors-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

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
    expect(line).toContain('auto, tensorflow, webgpu, wasm, cpu');
    expect(r.stdout).toBe('');
  });

  it('eval --checkpoint /nonexistent: CHECKPOINT_INVALID naming the directory, exit 1', async () => {
    const r = await runCli(['eval', '--checkpoint', '/nonexistent', '--backend', 'wasm'], { timeoutMs: 60_000 });
    expect(r.code).toBe(1);
    expect(expectOneLineError(r.stderr, 'CHECKPOINT_INVALID')).toContain('/nonexistent');
  });

  it('a variable for a flag the command lacks is not read: MNIST_DDP_WORKERS=1000 does not reach the coordinator', async () => {
    const r = await runCli(['coordinator', '--bind', 'not-an-endpoint'], { env: { MNIST_DDP_WORKERS: '1000' }, timeoutMs: 30_000 });
    expect(r.code).toBe(2);
    const line = expectOneLineError(r.stderr, 'CONFIG_INVALID');
    expect(line).toContain('bind (--bind)');
    expect(line).not.toContain('MNIST_DDP_WORKERS');
  });

  it('MNIST_DDP_PORT=abc serve: CONFIG_INVALID naming the environment variable, exit 2', async () => {
    const r = await runCli(['serve', '--checkpoint', '/nonexistent'], { env: { MNIST_DDP_PORT: 'abc' }, timeoutMs: 30_000 });
    expect(r.code).toBe(2);
    expect(expectOneLineError(r.stderr, 'CONFIG_INVALID')).toContain('port (MNIST_DDP_PORT) = "abc"');
  });

  it('serve --port 70000: CONFIG_INVALID naming the flag, exit 2', async () => {
    const r = await runCli(['serve', '--checkpoint', '/nonexistent', '--port', '70000'], { timeoutMs: 30_000 });
    expect(r.code).toBe(2);
    expect(expectOneLineError(r.stderr, 'CONFIG_INVALID')).toContain('port (--port) = "70000"');
  });

  it('export --quantize int4: CONFIG_INVALID naming the flag and the choices, exit 2', async () => {
    const r = await runCli(['export', '--checkpoint', '/nonexistent', '--out', join(work, 'web'), '--quantize', 'int4'], { timeoutMs: 30_000 });
    expect(r.code).toBe(2);
    const line = expectOneLineError(r.stderr, 'CONFIG_INVALID');
    expect(line).toContain('quantize (--quantize) = "int4"');
    expect(line).toContain("'uint8' | 'float16'");
  });

  it('export without --out: CONFIG_INVALID naming the flag and its environment variable, exit 2', async () => {
    const r = await runCli(['export', '--checkpoint', '/nonexistent'], { timeoutMs: 30_000 });
    expect(r.code).toBe(2);
    expect(expectOneLineError(r.stderr, 'CONFIG_INVALID')).toContain('missing out: pass --out or set MNIST_DDP_OUT');
  });

  it('eval --backend cuda: BACKEND_UNKNOWN naming the flag, exit 2', async () => {
    const r = await runCli(['eval', '--checkpoint', '/nonexistent', '--backend', 'cuda'], { timeoutMs: 30_000 });
    expect(r.code).toBe(2);
    const line = expectOneLineError(r.stderr, 'BACKEND_UNKNOWN');
    expect(line).toContain('"cuda" (--backend)');
    expect(line).toContain('auto, tensorflow, webgpu, wasm, cpu');
  });

  it('coordinator on a taken --coordinator-metrics-port: CONFIG_INVALID naming MNIST_DDP_COORDINATOR_METRICS_PORT, exit 2', async () => {
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    try {
      const port = (taken.address() as AddressInfo).port;
      const r = await runCli(['coordinator', '--metrics-host', '127.0.0.1', '--coordinator-metrics-port', String(port), '--bind', 'tcp://127.0.0.1:0'], { timeoutMs: 30_000 });
      expect(r.code).toBe(2);
      const line = expectOneLineError(r.stderr, 'CONFIG_INVALID');
      expect(line).toContain(`127.0.0.1:${port}`);
      expect(line).toContain('MNIST_DDP_COORDINATOR_METRICS_PORT');
    } finally {
      taken.close();
    }
  });

  it('coordinator over a finished run directory: RUN_FINISHED naming it, exit 1, and the run is left as it was', async () => {
    const runDir = join(work, 'finished-run');
    mkdirSync(runDir, { recursive: true });
    writeFileSync(join(runDir, 'eval.json'), '{"accuracy":0.99}');
    writeFileSync(join(runDir, 'history.jsonl'), '');
    const r = await runCli(['coordinator', '--run-dir', runDir, '--metrics-host', '127.0.0.1', '--coordinator-metrics-port', '0', '--bind', 'tcp://127.0.0.1:0'], { timeoutMs: 30_000 });
    expect(r.code).toBe(1);
    expect(expectOneLineError(r.stderr, 'RUN_FINISHED')).toContain(runDir);
    expect(readFileSync(join(runDir, 'history.jsonl'), 'utf8')).toBe('');
    expect(existsSync(join(runDir, 'config.json'))).toBe(false);
  });

  it('experiment transfer --label-fraction 2: CONFIG_INVALID naming the flag before any training, exit 2', async () => {
    const r = await runCli(['experiment', 'transfer', '--label-fraction', '2', '--run-dir', join(work, 'never-created')], { timeoutMs: 30_000 });
    expect(r.code).toBe(2);
    expect(expectOneLineError(r.stderr, 'CONFIG_INVALID')).toContain('labelFraction (--label-fraction) = "2"');
    expect(r.stdout).toBe('');
    expect(existsSync(join(work, 'never-created'))).toBe(false);
  });

  it('MNIST_DDP_CHECKPOINT=/nonexistent eval: the environment supplies --checkpoint (CHECKPOINT_INVALID naming it, exit 1)', async () => {
    const r = await runCli(['eval'], { env: { MNIST_DDP_CHECKPOINT: '/nonexistent', MNIST_DDP_BACKEND: 'wasm' }, timeoutMs: 60_000 });
    expect(r.code).toBe(1);
    expect(expectOneLineError(r.stderr, 'CHECKPOINT_INVALID')).toContain('/nonexistent');
  });

  it('finetune without --from: commander\'s own error naming the flag, exit 1 (as the README says)', async () => {
    const r = await runCli(['finetune', '--run-dir', join(work, 'never-created-finetune')], { timeoutMs: 30_000 });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("error: required option '--from <dir>' not specified");
    expect(existsSync(join(work, 'never-created-finetune'))).toBe(false);
  });

  it('MNIST_DDP_DATA_DIR=<dir without IDX files> data: DATA_NOT_FOUND naming that directory, exit 1', async () => {
    const empty = mkdtempSync(join(work, 'no-idx-'));
    const r = await runCli(['data', '--out', join(work, 'samples.png')], { env: { MNIST_DDP_DATA_DIR: empty }, timeoutMs: 30_000 });
    expect(r.code).toBe(1);
    expect(expectOneLineError(r.stderr, 'DATA_NOT_FOUND')).toContain(join(empty, 'train-images-idx3-ubyte'));
  });
});
