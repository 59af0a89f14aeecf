import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { probeWebgpu } from '../helpers/webgpu-probe.js';
import { afterAll, describe, expect, it } from 'vitest';
import { describeAdapter } from '../../src/shared/core/webgpu.js';
import { runCli } from '../helpers/cli.js';

/**
 * `--backend webgpu` and `auto` (issue #13). What needs an adapter is probed once, at collection time, in a child
 * process; without one those tests are reported as skipped and the reason is printed, never passed silently.
 */
const ROOT = fileURLToPath(new URL('../..', import.meta.url));

const probe = probeWebgpu('webgpu-backend.test');
const packagesInstalled = probe.ok || probe.code !== 'BACKEND_UNAVAILABLE';

const QUICK_BENCH = ['bench', '--model', 'mlp', '--batch-size', '8', '--steps', '4', '--windows', '1', '--warmup', '1', '--json'];

describe('describeAdapter (issue #13)', () => {
  it('calls llvmpipe and SwiftShader software, whatever isFallbackAdapter says, and a real GPU hardware', () => {
    const llvmpipe = { vendor: 'mesa', architecture: 'software', device: 'llvmpipe-llvm-15-0-6-256-bits-', description: 'llvmpipe: Mesa 25.0.7 (LLVM 15.0.6)' };
    const swiftshader = { vendor: 'google', architecture: 'swiftshader', device: 'swiftshader-device-subzero-', description: 'SwiftShader driver 5.0.0' };
    const h200 = { vendor: 'nvidia', architecture: 'hopper', device: '', description: 'NVIDIA H200', isFallbackAdapter: false };
    expect(describeAdapter({ ...llvmpipe, isFallbackAdapter: true }).software).toBe(true);
    expect(describeAdapter({ ...llvmpipe, architecture: '' }).software).toBe(true);
    expect(describeAdapter(swiftshader).software).toBe(true);
    expect(describeAdapter(h200)).toEqual({ vendor: 'nvidia', architecture: 'hopper', device: '', description: 'NVIDIA H200', software: false });
  });
});

describe('--backend webgpu (issue #13)', () => {
  it.skipIf(!probe.ok)(`logs one backend line naming the adapter (${probe.adapter?.description ?? 'no adapter'})`, async () => {
    const r = await runCli([...QUICK_BENCH, '--backend', 'webgpu'], { env: { MNIST_DDP_LOG_LEVEL: 'info' } });
    expect(r.code, r.stderr.slice(-2000)).toBe(0);
    const lines = r.stderr.split('\n').filter((l) => l.includes('"msg":"backend: '));
    expect(lines).toHaveLength(1);
    const line = JSON.parse(lines[0]!) as { msg: string; adapter: { vendor: string; architecture: string; description: string } };
    expect(line.msg).toContain('backend: webgpu on ');
    for (const part of [probe.adapter!.vendor, probe.adapter!.architecture, probe.adapter!.description]) expect(line.msg).toContain(part);
    expect(line.adapter).toMatchObject({ vendor: probe.adapter!.vendor, description: probe.adapter!.description });
    expect(JSON.parse(r.stdout.trim().split('\n').pop()!)).toMatchObject({ backend: 'webgpu', numTensorsDrift: 0 });
  });

  it.skipIf(!probe.ok || !probe.adapter?.software)('auto never picks a software adapter: it says so and falls back (runs only where the adapter is software)', async () => {
    const r = await runCli([...QUICK_BENCH, '--backend', 'auto'], { env: { MNIST_DDP_LOG_LEVEL: 'info' } });
    expect(r.code, r.stderr.slice(-2000)).toBe(0);
    const line = r.stderr.split('\n').find((l) => l.includes('"msg":"backend: '))!;
    expect(line).not.toContain('backend: webgpu');
    expect(line).toContain('software rasteriser');
    expect(JSON.parse(r.stdout.trim().split('\n').pop()!).backend).not.toBe('webgpu');
  });

  it.skipIf(!probe.ok || probe.adapter?.software !== false)('auto picks a hardware adapter (runs only where the adapter is hardware)', async () => {
    const r = await runCli([...QUICK_BENCH, '--backend', 'auto'], { env: { MNIST_DDP_LOG_LEVEL: 'info' } });
    expect(r.code, r.stderr.slice(-2000)).toBe(0);
    expect(JSON.parse(r.stdout.trim().split('\n').pop()!).backend).toBe('webgpu');
  });

  it.skipIf(!packagesInstalled)('with a Vulkan driver Dawn cannot use: GPU_ADAPTER_REJECTED, naming the driver', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'mnist-ddp-icd-'));
    try {
      const icd = join(dir, 'broken_icd.json');
      writeFileSync(icd, JSON.stringify({ file_format_version: '1.0.0', ICD: { library_path: join(dir, 'libvulkan_missing.so'), api_version: '1.3.0' } }));
      const r = await runCli([...QUICK_BENCH, '--backend', 'webgpu'], { env: { VK_ICD_FILENAMES: icd, VK_DRIVER_FILES: icd } });
      expect(r.code).toBe(1);
      expect(r.stderr).toContain('error [GPU_ADAPTER_REJECTED]');
      expect(r.stderr).toContain(icd);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it.skipIf(!packagesInstalled)('without a Vulkan driver: GPU_NO_VULKAN_DRIVER, naming what is missing, how to get it, and what Dawn said', async () => {
    const r = await runCli([...QUICK_BENCH, '--backend', 'webgpu'], { env: { VK_ICD_FILENAMES: '/nonexistent/icd.json', VK_DRIVER_FILES: '/nonexistent/icd.json' } });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('error [GPU_NO_VULKAN_DRIVER]');
    expect(r.stderr).toContain('/nonexistent/icd.json names no existing file');
    expect(r.stderr).toContain('install-mesa-backports.sh');
    expect(r.stderr).toContain('Dawn said:');
  });
});

describe('webgpu packages missing (issue #13)', () => {
  // A copy of the app whose node_modules holds every package but webgpu and tfjs-backend-webgpu.
  const dir = mkdtempSync(join(tmpdir(), 'mnist-ddp-no-webgpu-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('--backend webgpu fails with BACKEND_UNAVAILABLE saying how to install them; auto still runs', async () => {
    cpSync(join(ROOT, 'dist'), join(dir, 'dist'), { recursive: true });
    cpSync(join(ROOT, 'bin'), join(dir, 'bin'), { recursive: true });
    writeFileSync(join(dir, 'package.json'), JSON.stringify({ type: 'module' }));
    const modules = join(dir, 'node_modules');
    mkdirSync(join(modules, '@tensorflow'), { recursive: true });
    for (const name of readdirSync(join(ROOT, 'node_modules'))) {
      if (name === 'webgpu' || name === '@tensorflow' || name === '.bin') continue;
      symlinkSync(join(ROOT, 'node_modules', name), join(modules, name));
    }
    for (const name of readdirSync(join(ROOT, 'node_modules/@tensorflow'))) {
      if (name !== 'tfjs-backend-webgpu') symlinkSync(join(ROOT, 'node_modules/@tensorflow', name), join(modules, '@tensorflow', name));
    }
    const bin = join(dir, 'bin/mnist-ddp.js');
    const run = (backend: string) => spawnSync(process.execPath, [bin, ...QUICK_BENCH, '--backend', backend], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, MNIST_DDP_LOG_LEVEL: 'info' } });
    const webgpu = run('webgpu');
    expect(webgpu.status).toBe(1);
    expect(webgpu.stderr).toMatch(/error \[BACKEND_UNAVAILABLE\]: --backend webgpu: (webgpu|@tensorflow\/tfjs-backend-webgpu) is not installed/);
    expect(webgpu.stderr).toContain('npm install webgpu@0.6.2 @tensorflow/tfjs-backend-webgpu@4.22.0');
    const auto = run('auto');
    expect(auto.status, auto.stderr.slice(-1000)).toBe(0);
    expect(auto.stderr).toContain('webgpu packages not installed');
  });
});
