import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build, type Plugin } from 'esbuild';
import { afterAll, describe, expect, it } from 'vitest';
import type { ConformanceRun, ConformanceSummary } from './tfjs-core-ops.runner.js';

// Issue #17, part 1: tfjs-core's published op tests for every op our models use, against tfjs-backend-wasm with the
// mnist-ddp training kernels registered, excluding exactly what tfjs-backend-wasm's own setup_test.ts excludes.

const root = fileURLToPath(new URL('../..', import.meta.url));
const requireHere = createRequire(import.meta.url);
/** Inside the project (node_modules/.cache) so the bundle's external `require('jasmine')` resolves. */
const workDir = join(root, 'node_modules', '.cache', `mnist-ddp-conformance-${process.pid}`);

/**
 * One tfjs-core for everything: the specs import tfjs-core's ESM dist (`../index`), so the backend and our kernels
 * must too. `@tensorflow/tfjs` (our kernels' import) only re-exports tfjs-core for what they use. The wasm backend's
 * per-file ESM dist imports Emscripten files the package does not ship, and its UMD/Node bundles are ES5 classes
 * that cannot extend tfjs-core's ES2017 KernelBackend, so its flat ES2017 bundle (fesm) is used.
 */
const oneTfjsCore: Plugin = {
  name: 'one-tfjs-core',
  setup(b) {
    const core = requireHere.resolve('@tensorflow/tfjs-core/dist/index.js');
    const wasmBackend = requireHere.resolve('@tensorflow/tfjs-backend-wasm/dist/tf-backend-wasm.fesm.js');
    b.onResolve({ filter: /^@tensorflow\/(tfjs|tfjs-core)$/ }, () => ({ path: core }));
    b.onResolve({ filter: /^@tensorflow\/tfjs-backend-wasm$/ }, () => ({ path: wasmBackend }));
  },
};

async function bundleRunner(): Promise<string> {
  mkdirSync(workDir, { recursive: true });
  const outfile = join(workDir, 'runner.cjs');
  await build({
    entryPoints: [join(root, 'test/conformance/tfjs-core-ops.runner.ts')],
    outfile, bundle: true, platform: 'node', format: 'cjs', target: 'node20', logLevel: 'error',
    mainFields: ['module', 'main'], external: ['jasmine', 'jasmine-core'], plugins: [oneTfjsCore],
  });
  return outfile;
}

function run(runner: string, summaryPath: string, mode: ConformanceRun): Promise<{ code: number | null; output: string }> {
  const wasmDir = `${dirname(requireHere.resolve('@tensorflow/tfjs-backend-wasm/dist/tf-backend-wasm.fesm.js'))}/`;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [runner, summaryPath, wasmDir, mode], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d: Buffer) => { output += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { output += d.toString(); });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, output }));
  });
}

async function conformance(mode: ConformanceRun): Promise<ConformanceSummary> {
  runnerPath ??= bundleRunner();
  const summaryPath = join(workDir, `summary-${mode}.json`);
  const { code, output } = await run(await runnerPath, summaryPath, mode);
  expect(code, `runner exited with ${code}:\n${output.slice(-4000)}`).toBe(0);
  return JSON.parse(readFileSync(summaryPath, 'utf8')) as ConformanceSummary;
}

const describeFailures = (failed: ConformanceSummary['failed']): string =>
  failed.map((f) => `${f.name}\n    ${f.messages.join('\n    ')}`).join('\n');

/**
 * Specs of the 'gradients' run that fail in stock tfjs-backend-wasm kernels, not in ours: expected to fail, and
 * listed so that a new failure, or one of these passing after a tfjs upgrade, fails the test.
 */
const STOCK_WASM_GRADIENT_FAILURES = [
  // The stock FusedConv2D accepts only a rank-1 bias; this spec's bias is [2,2,2,1] (upstream excludes its other
  // broadcast-bias specs as 'broadcasted bias: not yet supported').
  'fused conv2d test-wasm {} gradient x=[2,3,3,1] f=[2,2,1,1] s=1 p=0 with bias',
];

let runnerPath: Promise<string> | undefined;

describe('tfjs-core op tests on wasm with mnist-ddp kernels (issue #17)', () => {
  afterAll(() => rmSync(workDir, { recursive: true, force: true }));

  it('passes every spec tfjs-backend-wasm 4.22 runs for our ops, with exactly its exclusions', async () => {
    const summary = await conformance('upstream');
    expect(summary.failed.length, `${summary.failed.length} of ${summary.passed + summary.failed.length} specs failed:\n${describeFailures(summary.failed)}`).toBe(0);
    // Guards against a filter or loader change that silently runs nothing.
    expect(summary.passed).toBeGreaterThan(350);
  }, 120_000);

  it('passes the gradient specs upstream skips only because stock wasm lacked the kernels we add', async () => {
    const summary = await conformance('gradients');
    const unexpected = summary.failed.filter((f) => !STOCK_WASM_GRADIENT_FAILURES.includes(f.name));
    expect(unexpected.length, `${unexpected.length} specs failed:\n${describeFailures(unexpected)}`).toBe(0);
    expect(summary.failed.map((f) => f.name).sort()).toEqual([...STOCK_WASM_GRADIENT_FAILURES].sort());
    expect(summary.passed).toBeGreaterThan(420);
  }, 120_000);
});
