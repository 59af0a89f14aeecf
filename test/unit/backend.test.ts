import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import { initBackend } from '../../src/shared/core/backend.js';
import { MnistDdpError } from '../../src/shared/core/errors.js';

const tfjsNodeInstalled = (() => {
  try {
    createRequire(import.meta.url).resolve('@tensorflow/tfjs-node');
    return true;
  } catch {
    return false;
  }
})();

describe('backend selection (issue #2)', () => {
  it.skipIf(tfjsNodeInstalled)('explains how to install tfjs-node when --backend tensorflow is not available', async () => {
    const err = await initBackend('tensorflow').catch((e: unknown) => e) as MnistDdpError;
    expect(err.code).toBe('BACKEND_UNAVAILABLE');
    expect(err.message).toContain('npm install @tensorflow/tfjs-node');
    expect(err.message).toContain('network access');
    expect(err.message).toMatch(/CUDA 11\.2.*cuDNN 8\.1/);
  });

  it('auto logs the backend it picked in one line', async () => {
    const lines: string[] = [];
    const log = { info: (_o: unknown, msg: string) => lines.push(msg) } as never;
    const selection = await initBackend('auto', log);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain(`backend: ${selection.backend}`);
  });

  it.skipIf(tfjsNodeInstalled)('auto falls back to wasm with our kernels when tfjs-node is absent, and says so', async () => {
    const lines: string[] = [];
    const log = { info: (_o: unknown, msg: string) => lines.push(msg) } as never;
    const selection = await initBackend('auto', log);
    expect(selection.backend).toBe('wasm');
    expect(selection.reason).toContain('@tensorflow/tfjs-node is not installed');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain('backend: wasm');
  });
});
