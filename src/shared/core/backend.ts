import { existsSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import * as tf from '@tensorflow/tfjs';
import { MnistDdpError } from './errors.js';
import type { Logger } from './log.js';
import { registerWasmTrainingKernels } from '../kernels/register.js';
import { activateWebgpu, adapterLabel, webgpuInstalled, type GpuAdapterDescription } from './webgpu.js';

export type { GpuAdapterDescription };

export const BACKEND_NAMES = ['auto', 'tensorflow', 'webgpu', 'wasm', 'cpu'] as const;
export type BackendChoice = (typeof BACKEND_NAMES)[number];

export interface BackendSelection {
  /** tfjs backend name now active: 'tensorflow', 'webgpu', 'wasm' or 'cpu'. */
  backend: string;
  /** npm package that provides it. */
  provider: string;
  reason: string;
  /** The GPU adapter, on webgpu. */
  adapter?: GpuAdapterDescription;
}

const require = createRequire(import.meta.url);

const TENSORFLOW_INSTALL_HINT =
  'Install it with `npm install @tensorflow/tfjs-node` (CPU) or `npm install @tensorflow/tfjs-node-gpu` (GPU). ' +
  'Both download libtensorflow during install, so they need network access; the GPU build also needs CUDA 11.2 ' +
  'and cuDNN 8.1. Without them, use --backend wasm (the default under auto).';

function gpuVisible(): boolean {
  try {
    return existsSync('/proc/driver/nvidia/gpus') && readdirSync('/proc/driver/nvidia/gpus').length > 0;
  } catch {
    return false;
  }
}

/** Loads a tfjs-node package if it is installed and its native binding loads; returns why not otherwise. */
function tryNative(pkg: string): { ok: true } | { ok: false; why: string } {
  try {
    require.resolve(pkg);
  } catch {
    return { ok: false, why: `${pkg} is not installed` };
  }
  try {
    require(pkg);
    return { ok: true };
  } catch (err) {
    return { ok: false, why: `${pkg} failed to load (${(err as Error).message.split('\n')[0]})` };
  }
}

const TFJS_NODE_GPU = '@tensorflow/tfjs-node-gpu';
const TFJS_NODE = '@tensorflow/tfjs-node';

function loadTfjsNodeGpu(): { ok: true } | { ok: false; why: string } {
  return gpuVisible() ? tryNative(TFJS_NODE_GPU) : { ok: false, why: 'no CUDA GPU visible for tfjs-node-gpu' };
}

/**
 * Loads tfjs-node-gpu when a GPU is visible and it loads, else tfjs-node. `skipped` gives the reason for each
 * package not used; when neither loads, `why` is tfjs-node's.
 */
function loadTfjsNode(): { ok: true; provider: string; skipped: string[] } | { ok: false; why: string; skipped: string[] } {
  const gpu = loadTfjsNodeGpu();
  if (gpu.ok) return { ok: true, provider: TFJS_NODE_GPU, skipped: [] };
  const cpu = tryNative(TFJS_NODE);
  if (cpu.ok) return { ok: true, provider: TFJS_NODE, skipped: [gpu.why] };
  return { ok: false, why: cpu.why, skipped: [gpu.why, cpu.why] };
}

async function activate(name: string): Promise<void> {
  if (!(await tf.setBackend(name))) throw new Error(`tf.setBackend('${name}') returned false`);
  await tf.ready();
}

async function activateWasm(): Promise<void> {
  await import('@tensorflow/tfjs-backend-wasm');
  await activate('wasm');
  registerWasmTrainingKernels();
}

/**
 * Chooses and activates the tfjs backend. `auto` tries, in order: tfjs-node-gpu when it loads and a GPU is visible,
 * webgpu on a hardware adapter (never a software one), tfjs-node, wasm with our training kernels, then cpu.
 * Logs one line naming the choice, the GPU adapter when there is one, and why.
 */
export async function initBackend(choice: BackendChoice, log?: Logger): Promise<BackendSelection> {
  const selection = await select(choice, log);
  const on = selection.adapter ? ` on ${adapterLabel(selection.adapter)}` : '';
  log?.info({ backend: selection.backend, provider: selection.provider, ...(selection.adapter ? { adapter: selection.adapter } : {}) },
    `backend: ${selection.backend}${on} (${selection.reason})`);
  return selection;
}

/**
 * What a process trains on, as one comparable string: the backend, and on webgpu the adapter ("webgpu on nvidia hopper
 * (NVIDIA H200)"). Workers announce it at hello; --balance auto balances rings whose workers name different devices.
 */
export function deviceLabel(selection: BackendSelection): string {
  // At most 200 characters: the hello message's limit (control-messages.ts).
  return (selection.adapter ? `${selection.backend} on ${adapterLabel(selection.adapter)}` : selection.backend).slice(0, 200);
}

const WEBGPU_PROVIDER = '@tensorflow/tfjs-backend-webgpu';

async function select(choice: BackendChoice, log?: Logger): Promise<BackendSelection> {
  switch (choice) {
    case 'webgpu': {
      const { adapter } = await activateWebgpu({ allowSoftware: true, log });
      const reason = adapter.software ? 'requested with --backend webgpu; a software adapter: correct, not fast' : 'requested with --backend webgpu';
      return { backend: 'webgpu', provider: WEBGPU_PROVIDER, reason, adapter };
    }
    case 'cpu':
      await activate('cpu');
      return { backend: 'cpu', provider: '@tensorflow/tfjs-backend-cpu', reason: 'requested with --backend cpu (reference backend, slow)' };
    case 'wasm':
      await activateWasm();
      return { backend: 'wasm', provider: '@tensorflow/tfjs-backend-wasm', reason: 'requested; XNNPACK + mnist-ddp training kernels' };
    case 'tensorflow': {
      const native = loadTfjsNode();
      if (!native.ok) {
        throw new MnistDdpError('BACKEND_UNAVAILABLE', `--backend tensorflow: ${native.why}. ${TENSORFLOW_INSTALL_HINT}`, { backend: 'tensorflow' });
      }
      await activate('tensorflow');
      return { backend: 'tensorflow', provider: native.provider, reason: 'requested with --backend tensorflow' };
    }
    case 'auto': {
      const skipped: string[] = [];
      const nodeGpu = loadTfjsNodeGpu();
      if (nodeGpu.ok) {
        await activate('tensorflow');
        return { backend: 'tensorflow', provider: TFJS_NODE_GPU, reason: 'auto: GPU visible and tfjs-node-gpu loaded' };
      }
      skipped.push(nodeGpu.why);
      if (webgpuInstalled()) {
        try {
          const { adapter } = await activateWebgpu({ allowSoftware: false, askDawnWhy: false, log });
              return { backend: 'webgpu', provider: WEBGPU_PROVIDER, reason: `auto: ${skipped.join('; ')}; hardware WebGPU adapter found`, adapter };
        } catch (err) {
          skipped.push(`webgpu not used (${(err as Error).message.split('. ')[0]})`);
        }
      } else {
        skipped.push('webgpu packages not installed');
      }
      const cpu = tryNative(TFJS_NODE);
      if (cpu.ok) {
        await activate('tensorflow');
        return { backend: 'tensorflow', provider: TFJS_NODE, reason: `auto: tfjs-node loaded (${skipped.join('; ')})` };
      }
      skipped.push(cpu.why);
      try {
        await activateWasm();
        return { backend: 'wasm', provider: '@tensorflow/tfjs-backend-wasm', reason: `auto: ${skipped.join('; ')}; using wasm with mnist-ddp training kernels` };
      } catch (err) {
        skipped.push(`wasm failed (${(err as Error).message})`);
      }
      await activate('cpu');
      return { backend: 'cpu', provider: '@tensorflow/tfjs-backend-cpu', reason: `auto: ${skipped.join('; ')}; falling back to cpu` };
    }
  }
}
