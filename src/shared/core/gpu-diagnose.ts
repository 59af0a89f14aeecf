import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { MnistDdpError } from './errors.js';

/**
 * Why WebGPU found no adapter. Dawn's `requestAdapter()` resolves null and writes the reason only as warnings on the
 * native stderr, which JavaScript cannot catch. So on that (failure-only) path we look at the filesystem for the
 * Vulkan loader and driver manifests, and re-run the request in a child process to capture Dawn's own words.
 */

const LIB_DIRS = ['/usr/lib/x86_64-linux-gnu', '/lib/x86_64-linux-gnu', '/usr/lib/aarch64-linux-gnu', '/usr/lib64', '/usr/lib', '/usr/local/lib'];

const INSTALL_HINT =
  'On Debian 12, scripts/install-mesa-backports.sh installs Mesa 25 lavapipe and libvulkan1 (a software adapter, for tests); ' +
  "on a GPU host install the vendor's Vulkan driver (NVIDIA: the driver's Vulkan ICD, exposed to containers by the 'graphics' capability).";

function findVulkanLoader(env: NodeJS.ProcessEnv): string | undefined {
  const dirs = [...(env.LD_LIBRARY_PATH ?? '').split(':').filter(Boolean), ...LIB_DIRS];
  return dirs.map((d) => join(d, 'libvulkan.so.1')).find((p) => existsSync(p));
}

/** ICD manifests the Vulkan loader would read; VK_DRIVER_FILES / VK_ICD_FILENAMES replace the search when set. */
function findIcds(env: NodeJS.ProcessEnv): { override?: string; found: string[] } {
  const override = env.VK_DRIVER_FILES ?? env.VK_ICD_FILENAMES;
  if (override) return { override, found: override.split(':').filter((f) => f && existsSync(f)) };
  const dataDirs = (env.XDG_DATA_DIRS ?? '/usr/local/share:/usr/share').split(':').filter(Boolean);
  const dirs = ['/etc/vulkan/icd.d', ...dataDirs.map((d) => join(d, 'vulkan/icd.d'))];
  const found = dirs.flatMap((d) => {
    try {
      return readdirSync(d).filter((f) => f.endsWith('.json')).map((f) => join(d, f));
    } catch {
      return [];
    }
  });
  return { found };
}

/** Dawn's stderr warnings for a fresh adapter request, from a child process (≈0.3 s). */
export function dawnWarnings(webgpuModuleUrl: string): string[] {
  const script = `const { create, globals } = await import(${JSON.stringify(webgpuModuleUrl)}); Object.assign(globalThis, globals);` +
    "const a = await create([]).requestAdapter(); process.stdout.write(a ? 'adapter' : 'null');";
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 20_000 });
  return (r.stderr ?? '').split('\n').filter((l) => l.startsWith('Warning:') && !l.includes('artificially reduced')).map((l) => l.slice('Warning: '.length));
}

/** The coded error for "requestAdapter() resolved null": what is missing and how to get it. */
export function diagnoseNoAdapter(webgpuModuleUrl: string, options: { askDawn: boolean }, env: NodeJS.ProcessEnv = process.env): MnistDdpError {
  const warnings = options.askDawn ? dawnWarnings(webgpuModuleUrl) : [];
  const said = warnings.length > 0 ? ` Dawn said: ${warnings.join(' | ')}` : '';
  const details = { backend: 'webgpu', dawnWarnings: warnings };
  if (!findVulkanLoader(env)) {
    return new MnistDdpError('GPU_VULKAN_LOADER_MISSING',
      `--backend webgpu: no GPU adapter: the Vulkan loader libvulkan.so.1 was not found (searched LD_LIBRARY_PATH and ${LIB_DIRS.join(', ')}). Install libvulkan1 or put the loader on LD_LIBRARY_PATH. ${INSTALL_HINT}${said}`, details);
  }
  const icds = findIcds(env);
  if (icds.found.length === 0) {
    const where = icds.override ? `VK_DRIVER_FILES/VK_ICD_FILENAMES=${icds.override} names no existing file` : 'no ICD manifest in /etc/vulkan/icd.d or $XDG_DATA_DIRS/vulkan/icd.d';
    return new MnistDdpError('GPU_NO_VULKAN_DRIVER', `--backend webgpu: no GPU adapter: no Vulkan driver (${where}). ${INSTALL_HINT}${said}`, details);
  }
  return new MnistDdpError('GPU_ADAPTER_REJECTED',
    `--backend webgpu: no GPU adapter: Vulkan drivers ${icds.found.join(', ')} are installed but Dawn accepted none (Debian 12's own Mesa 22.3 lavapipe lacks features Dawn requires). ${INSTALL_HINT}${said}`, details);
}
