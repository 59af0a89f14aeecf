import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { registerWebgpuTrainingKernels } from '../kernels/register.js';
import { MnistDdpError } from './errors.js';
import { diagnoseNoAdapter } from './gpu-diagnose.js';
import type { Logger } from './log.js';

/**
 * The WebGPU backend in Node: Dawn's bindings (npm `webgpu`) provide `navigator.gpu`, tfjs-backend-webgpu runs the
 * kernels on it. Both packages are optional dependencies, loaded here at run time; one code path serves NVIDIA, AMD,
 * Intel and Apple GPUs, and CI runs it on Mesa's lavapipe (a software Vulkan).
 *
 * Types are declared locally, not imported from the packages: the project must type-check without them.
 */

export const WEBGPU_PACKAGE = 'webgpu';
export const TFJS_WEBGPU_PACKAGE = '@tensorflow/tfjs-backend-webgpu';
export const WEBGPU_INSTALL_HINT =
  'Install them with `npm install webgpu@0.6.2 @tensorflow/tfjs-backend-webgpu@4.22.0` (prebuilt Dawn, nothing is downloaded at install); ' +
  'Dawn also needs a Vulkan loader and driver (scripts/install-mesa-backports.sh on Debian 12 for a software one).';

/** What the backend log line and `bench --json` say about the GPU. */
export interface GpuAdapterDescription {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  /** A software rasteriser (llvmpipe/lavapipe, SwiftShader): correct but slow; `auto` never picks one. */
  software: boolean;
}

interface GpuAdapterInfoLike {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  isFallbackAdapter?: boolean;
}
interface GpuDeviceLike {
  destroy(): void;
  addEventListener(type: 'uncapturederror', listener: (event: { error: { message: string } }) => void): void;
}
interface GpuAdapterLike {
  readonly info: GpuAdapterInfoLike;
  readonly features: ReadonlySet<string>;
  readonly limits: Record<string, number>;
  requestDevice(descriptor?: { requiredFeatures?: string[]; requiredLimits?: Record<string, number> }): Promise<GpuDeviceLike>;
}
interface GpuLike {
  requestAdapter(options?: { powerPreference?: 'high-performance' | 'low-power' }): Promise<GpuAdapterLike | null>;
}
interface DawnModule {
  create(options: string[]): GpuLike;
  globals: Record<string, unknown>;
}
interface TfjsWebgpuModule {
  WebGPUBackend: new (device: GpuDeviceLike, adapterInfo?: GpuAdapterInfoLike) => tf.KernelBackend;
}

const require = createRequire(import.meta.url);
const SOFTWARE_ADAPTER = /llvmpipe|lavapipe|swiftshader|softpipe/i;

export function describeAdapter(info: GpuAdapterInfoLike): GpuAdapterDescription {
  const text = `${info.vendor} ${info.architecture} ${info.device} ${info.description}`;
  return {
    vendor: info.vendor, architecture: info.architecture, device: info.device, description: info.description,
    software: info.isFallbackAdapter === true || info.architecture === 'software' || SOFTWARE_ADAPTER.test(text),
  };
}

/** "nvidia hopper (NVIDIA H200)"-style text for the backend log line. */
export function adapterLabel(a: GpuAdapterDescription): string {
  return `${a.vendor || 'unknown vendor'} ${a.architecture || 'unknown architecture'} (${a.description || a.device || 'no description'})`;
}

/** Whether both optional packages can be resolved (cheap: loads nothing). */
export function webgpuInstalled(): boolean {
  try {
    require.resolve(WEBGPU_PACKAGE);
    require.resolve(TFJS_WEBGPU_PACKAGE);
    return true;
  } catch {
    return false;
  }
}

async function loadPackage<T>(pkg: string): Promise<T> {
  let url: string;
  try {
    url = pathToFileURL(require.resolve(pkg)).href;
  } catch {
    throw new MnistDdpError('BACKEND_UNAVAILABLE', `--backend webgpu: ${pkg} is not installed. ${WEBGPU_INSTALL_HINT}`, { backend: 'webgpu', package: pkg });
  }
  try {
    return await import(url) as T;
  } catch (err) {
    // e.g. dawn.node needs libstdc++ with GLIBCXX_3.4.30
    throw new MnistDdpError('BACKEND_UNAVAILABLE', `--backend webgpu: ${pkg} failed to load (${(err as Error).message.split('\n')[0]}). ${WEBGPU_INSTALL_HINT}`, { backend: 'webgpu', package: pkg }, { cause: err });
  }
}

/** One Dawn instance per process, exposed as navigator.gpu (what tfjs-backend-webgpu reads). */
let gpu: GpuLike | undefined;

function installNavigatorGpu(dawn: DawnModule): GpuLike {
  if (gpu) return gpu;
  Object.assign(globalThis, dawn.globals); // GPUBufferUsage, GPUMapMode, … that tfjs-backend-webgpu uses
  gpu = dawn.create([]);
  // Node ≥ 21 has a global `navigator` (a getter, no `gpu`); Node 20 has none. defineProperty works on both.
  const holder = globalThis as { navigator?: object };
  const nav = holder.navigator ?? {};
  Object.defineProperty(nav, 'gpu', { value: gpu, configurable: true, writable: true });
  if (holder.navigator !== nav) Object.defineProperty(globalThis, 'navigator', { value: nav, configurable: true, writable: true });
  return gpu;
}

export interface WebgpuActivation {
  adapter: GpuAdapterDescription;
}

/**
 * Loads the packages, asks Dawn for an adapter and activates tfjs's 'webgpu' backend on a device of it. Throws coded
 * errors: BACKEND_UNAVAILABLE (a package is missing or fails to load), GPU_VULKAN_LOADER_MISSING /
 * GPU_NO_VULKAN_DRIVER / GPU_ADAPTER_REJECTED (no adapter, with the reason), GPU_SOFTWARE_ADAPTER (only a software
 * adapter and `allowSoftware` is false; nothing has been activated then). `askDawnWhy: false` skips re-asking Dawn in a
 * child process (≈0.3 s) for its reason when there is no adapter: auto moves on to the next backend anyway.
 */
export async function activateWebgpu(options: { allowSoftware: boolean; askDawnWhy?: boolean; log?: Logger }): Promise<WebgpuActivation> {
  const dawn = await loadPackage<DawnModule>(WEBGPU_PACKAGE);
  // Imported before navigator.gpu exists, so that it does not register its own 'webgpu' factory at priority 3 (which
  // would make tfjs refuse every tensor until that backend initialises); we register ours below with the adapter
  // we chose. The import registers the kernels.
  const module = await loadPackage<TfjsWebgpuModule & { default?: TfjsWebgpuModule }>(TFJS_WEBGPU_PACKAGE);
  const WebGPUBackend = module.WebGPUBackend ?? module.default?.WebGPUBackend;
  if (!WebGPUBackend) throw new MnistDdpError('BACKEND_UNAVAILABLE', `--backend webgpu: ${TFJS_WEBGPU_PACKAGE} exports no WebGPUBackend. ${WEBGPU_INSTALL_HINT}`, { backend: 'webgpu' });
  const adapter = await installNavigatorGpu(dawn).requestAdapter({ powerPreference: 'high-performance' });
  if (!adapter) throw diagnoseNoAdapter(pathToFileURL(require.resolve(WEBGPU_PACKAGE)).href, { askDawn: options.askDawnWhy ?? true });
  const description = describeAdapter(adapter.info);
  if (description.software && !options.allowSoftware) {
    throw new MnistDdpError('GPU_SOFTWARE_ADAPTER', `the only WebGPU adapter is a software rasteriser, ${adapterLabel(description)}; auto does not use it (--backend webgpu does)`, { backend: 'webgpu', adapter: description });
  }
  // The device tfjs-backend-webgpu would request (its base.ts): the adapter's own limits, optional timestamps.
  const limits = adapter.limits;
  const device = await adapter.requestDevice({
    requiredFeatures: adapter.features.has('timestamp-query') ? ['timestamp-query'] : [],
    requiredLimits: Object.fromEntries(['maxComputeWorkgroupStorageSize', 'maxComputeWorkgroupsPerDimension', 'maxStorageBufferBindingSize',
      'maxBufferSize', 'maxComputeWorkgroupSizeX', 'maxComputeInvocationsPerWorkgroup'].map((k) => [k, limits[k]!])),
  });
  // A command buffer Dawn rejects is dropped silently (its kernels never run, results are garbage): say so loudly.
  let reported = 0;
  device.addEventListener('uncapturederror', (event) => {
    if (reported++ < 5) options.log?.error({ backend: 'webgpu' }, `WebGPU error: ${event.error.message.split('\n')[0]}`);
  });
  if (tf.findBackendFactory('webgpu')) tf.removeBackend('webgpu');
  tf.registerBackend('webgpu', () => new WebGPUBackend(device, adapter.info), 0);
  if (!(await tf.setBackend('webgpu'))) {
    device.destroy();
    throw new MnistDdpError('BACKEND_UNAVAILABLE', `--backend webgpu: tfjs could not start the webgpu backend on ${adapterLabel(description)}`, { backend: 'webgpu', adapter: description });
  }
  await tf.ready();
  registerWebgpuTrainingKernels();
  return { adapter: description };
}
