import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { probeWebgpu, WEBGPU_RUNNER as RUNNER } from '../helpers/webgpu-probe.js';
import { describe, expect, it } from 'vitest';
import { MODEL_NAMES } from '../../src/shared/model/zoo.js';
import type { GradsResult, RunnerJob } from './webgpu-runner.js';
import { floats, relativeError } from '../helpers/float-buffers.js';

/**
 * Training on the webgpu backend (issue #13), compared with the wasm backend. Every backend runs in its own child
 * process (webgpu-runner.ts). On CPU-only machines the adapter is Mesa's lavapipe (scripts/install-mesa-backports.sh);
 * without any adapter these tests are reported as skipped and the reason is printed.
 */
const ROOT = fileURLToPath(new URL('../..', import.meta.url));

const probe = probeWebgpu('webgpu-training.test');

function runJob<T>(job: RunnerJob, timeoutMs: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', RUNNER], { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, MNIST_DDP_LOG_LEVEL: 'warn' } });
    child.stdin.end(JSON.stringify(job));
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`runner ${job.task} did not finish within ${timeoutMs} ms\n${stderr.slice(-1500)}`));
    }, timeoutMs);
    child.on('exit', (code) => {
      clearTimeout(timer);
      if (code !== 0) return reject(new Error(`runner ${job.task} exited ${code}\n${stderr.slice(-1500)}`));
      try {
        resolve(JSON.parse(stdout.trim().split('\n').pop() ?? '') as T);
      } catch (err) {
        reject(new Error(`runner ${job.task}: no JSON result (${(err as Error).message}); stdout ends ${JSON.stringify(stdout.slice(-200))}`));
      }
    });
  });
}

describe.skipIf(!probe.ok)(`training on webgpu (${probe.adapter?.description ?? 'no adapter'}) vs wasm (issue #13)`, () => {
  it('gradients equal the wasm backend\'s within 1e-4 relative for every zoo model, from the same weights and batch; each model then steps and evaluates', async () => {
    const job = { task: 'grads', models: [...MODEL_NAMES], batch: 8 } as const;
    const wasm = await runJob<{ models: GradsResult[] }>({ ...job, backend: 'wasm' }, 120_000);
    const weights = Object.fromEntries(wasm.models.map((m) => [m.model, m.weights]));
    const webgpu = await runJob<{ backend: string; models: GradsResult[] }>({ ...job, backend: 'webgpu', weights }, 180_000);
    expect(webgpu.backend).toBe('webgpu');
    for (const [i, ref] of wasm.models.entries()) {
      const gpu = webgpu.models[i]!;
      expect(gpu.model).toBe(ref.model);
      expect(gpu.weights === ref.weights, `${ref.model}: both start from the same weights`).toBe(true);
      const a = floats(gpu.buffer);
      const b = floats(ref.buffer);
      expect(a.length).toBe(b.length);
      for (const slot of ref.slots) {
        expect(relativeError(a, b, slot.offset, slot.offset + slot.size), `${ref.model} ${slot.name}`).toBeLessThan(1e-4);
      }
      expect(Math.abs(a[b.length - 2]! - b[b.length - 2]!) / Math.abs(b[b.length - 2]!), `${ref.model}: loss`).toBeLessThan(1e-4);
      expect(a[b.length - 1]).toBe(8);
      expect(gpu.evaluated).toBe(40);
      expect(Math.abs(gpu.lossAfterStep - ref.lossAfterStep) / ref.lossAfterStep).toBeLessThan(1e-4);
    }
  }, 320_000);

  it('a short run (300 steps of mlp) lands in the same accuracy band as wasm', async () => {
    const job = { task: 'train', model: 'mlp', steps: 300, batch: 32, lr: 0.05, evalSamples: 2000 } as const;
    const wasm = await runJob<{ accuracy: number }>({ ...job, backend: 'wasm' }, 120_000);
    const webgpu = await runJob<{ backend: string; accuracy: number; firstLoss: number; lastLoss: number }>({ ...job, backend: 'webgpu' }, 180_000);
    expect(webgpu.backend).toBe('webgpu');
    expect(webgpu.lastLoss).toBeLessThan(webgpu.firstLoss);
    expect(wasm.accuracy).toBeGreaterThan(0.8);
    expect(webgpu.accuracy).toBeGreaterThan(0.8);
    expect(Math.abs(webgpu.accuracy - wasm.accuracy), `webgpu ${webgpu.accuracy} vs wasm ${wasm.accuracy}`).toBeLessThan(0.02);
  }, 320_000);

  it('keeps tf.memory().numTensors flat over 100 training steps on webgpu', async () => {
    const { backend, counts } = await runJob<{ backend: string; counts: number[] }>({ task: 'memory', backend: 'webgpu', model: 'cnn', steps: 100, batch: 4 }, 240_000);
    expect(backend).toBe('webgpu');
    expect(counts).toHaveLength(100);
    expect(new Set(counts), `numTensors per step: ${counts.join(' ')}`).toEqual(new Set([counts[0]]));
  }, 260_000);
});
