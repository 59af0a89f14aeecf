/**
 * Child-process entry of tfjs-core-ops.test.ts (issue #17): tfjs-core 4.22's published op tests, run by jasmine
 * against tfjs-backend-wasm with the mnist-ddp training kernels registered, filtered as tfjs-backend-wasm filters
 * them. tfjs-core ships its tests as ES modules with extensionless imports and a top-level `require`, so the test
 * bundles this file with esbuild (one tfjs-core instance for the specs, the backend and our kernels) and runs the
 * bundle with plain `node`. Writes a JSON summary to the path in argv[2].
 */
import { writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { setWasmPaths } from '@tensorflow/tfjs-backend-wasm';
// Deep imports from dist, as tfjs-backend-wasm's own setup_test.ts does (see tfjs-wasm-test-filters.ts): chained
// ops (x.sum()) and gradients, which the specs use, are registered by side effect.
import '@tensorflow/tfjs-core/dist/public/chained_ops/register_all_chained_ops.js';
import '@tensorflow/tfjs-core/dist/register_all_gradients.js';
import { setTestEnvs, setupTestFilters } from '@tensorflow/tfjs-core/dist/jasmine_util.js';
import { registerWasmTrainingKernels } from '../../src/shared/kernels/register.js';
import { UPSTREAM_WASM_TEST_FILTERS, type TestFilter } from './tfjs-wasm-test-filters.js';

/**
 * The op test files for every op our models train with: conv2d and its gradients (fused, transposed: both use our
 * backprop kernels), maxPool and its gradient, relu, matMul / batchMatMul (fused too), sum, mean, softmax,
 * logSoftmax, tile, transpose, batchNorm, add, mul (arithmetic_test). Loaded in this order after the filters are set.
 */
export const OP_TEST_FILES = [
  'ops/conv2d_test', 'ops/fused/fused_conv2d_test', 'ops/conv2d_transpose_test',
  'ops/max_pool_test', 'ops/relu_test', 'ops/mat_mul_test', 'ops/fused/fused_mat_mul_test',
  'ops/sum_test', 'ops/mean_test', 'ops/softmax_test', 'ops/log_softmax_test',
  'ops/tile_test', 'ops/transpose_test', 'ops/batchnorm_test', 'ops/add_test', 'ops/arithmetic_test',
] as const;

/** The env tfjs-backend-wasm's setup_test.ts registers: spec names read "<describe> test-wasm {} <it>". */
const TEST_ENV = { name: 'test-wasm', backendName: 'wasm', isDataSync: true };

/**
 * Upstream's filters decide every spec one of them matches. Upstream runs no spec that none matches (e.g. all of
 * logSoftmax, matmulBatch): those ops were not implemented in wasm when the list was written. Our models use them,
 * so this last entry runs them: it excludes nothing, and, being last, never overrides an upstream entry.
 */
const RUN_UNLISTED: TestFilter = { include: TEST_ENV.name };

/**
 * Upstream's exclusions that say only "gradient not yet implemented" in wasm. mnist-ddp implements exactly those
 * kernels (Conv2DBackpropInput/Filter, ReluGrad) and trains through the rest, so the 'gradients' run lifts these and
 * keeps every other exclusion (NCHW, complex, string, upcasts, zero-size shapes, …).
 */
const GRADIENT_EXCLUSIONS = new Set(['gradient', 'derivative', 'valueAndGradients', 'backProp input x=[2,3,3,1] f=[2,2,1,1] s=1 p=0']);

export type ConformanceRun = 'upstream' | 'gradients';

function filtersFor(run: ConformanceRun): TestFilter[] {
  if (run === 'upstream') return [...UPSTREAM_WASM_TEST_FILTERS, RUN_UNLISTED];
  return [...UPSTREAM_WASM_TEST_FILTERS.map((f) => ({ ...f, excludes: f.excludes?.filter((e) => !GRADIENT_EXCLUSIONS.has(e)) })), RUN_UNLISTED];
}

export interface ConformanceSummary {
  total: number;
  passed: number;
  failed: Array<{ name: string; messages: string[] }>;
  /** Filtered out by an upstream `excludes` entry (or not in OP_TEST_FILES' describes). */
  excluded: number;
  /** Ran only because of RUN_UNLISTED. */
  unlisted: string[];
  seconds: number;
}

interface SpecResult { fullName: string; status: string; failedExpectations: Array<{ message: string }> }
interface JasmineRunner {
  exitOnCompletion: boolean;
  addReporter(reporter: { specDone(result: SpecResult): void }): void;
  randomizeTests(random: boolean): void;
  execute(): Promise<{ overallStatus: string }>;
}

/** True when the first upstream filter that matches `name` matches it (mirrors setupTestFilters' loop). */
function upstreamListed(name: string): boolean {
  return UPSTREAM_WASM_TEST_FILTERS.some((f) =>
    (f.include !== undefined && name.includes(f.include)) || (f.startsWith !== undefined && name.startsWith(f.startsWith)));
}

async function main(): Promise<void> {
  const [summaryPath, wasmDir, run] = process.argv.slice(2);
  if (!summaryPath || !wasmDir || (run !== 'upstream' && run !== 'gradients')) {
    throw new Error('usage: node runner.cjs <summary.json> <tfjs-backend-wasm dist dir/> upstream|gradients');
  }
  const started = performance.now();
  const require = createRequire(__filename);
  // The bundle no longer sits next to the .wasm files the Emscripten loader looks for.
  setWasmPaths(wasmDir);
  registerWasmTrainingKernels();

  const Jasmine = require('jasmine') as new (options: { globals: boolean }) => JasmineRunner;
  const runner = new Jasmine({ globals: true });
  runner.exitOnCompletion = false;
  runner.randomizeTests(false);
  setTestEnvs([TEST_ENV]);
  // Upstream's customInclude, verbatim in effect: only describeWithFlags specs are filtered.
  const customInclude = (name: string): boolean => !name.includes(TEST_ENV.name) || name.startsWith('wasm');
  setupTestFilters(filtersFor(run), customInclude);

  const summary: ConformanceSummary = { total: 0, passed: 0, failed: [], excluded: 0, unlisted: [], seconds: 0 };
  runner.addReporter({
    specDone(result) {
      summary.total++;
      if (result.status === 'excluded') { summary.excluded++; return; }
      if (!upstreamListed(result.fullName)) summary.unlisted.push(result.fullName);
      if (result.status === 'passed') summary.passed++;
      else summary.failed.push({ name: result.fullName, messages: result.failedExpectations.map((e) => e.message) });
    },
  });
  // After the filters and the test env: describeWithFlags reads both when the files load.
  for (const file of OP_TEST_FILES) loadSpecs(file);
  await runner.execute();
  summary.seconds = (performance.now() - started) / 1000;
  writeFileSync(summaryPath, JSON.stringify(summary, null, 1));
}

/**
 * esbuild bundles each spec file in place of this call and evaluates it when called (a plain dynamic `require` of
 * an ESM file would not work). The switch keeps every path a literal esbuild can see.
 */
function loadSpecs(file: (typeof OP_TEST_FILES)[number]): void {
  switch (file) {
    case 'ops/conv2d_test': require('@tensorflow/tfjs-core/dist/ops/conv2d_test'); break;
    case 'ops/fused/fused_conv2d_test': require('@tensorflow/tfjs-core/dist/ops/fused/fused_conv2d_test'); break;
    case 'ops/conv2d_transpose_test': require('@tensorflow/tfjs-core/dist/ops/conv2d_transpose_test'); break;
    case 'ops/max_pool_test': require('@tensorflow/tfjs-core/dist/ops/max_pool_test'); break;
    case 'ops/relu_test': require('@tensorflow/tfjs-core/dist/ops/relu_test'); break;
    case 'ops/mat_mul_test': require('@tensorflow/tfjs-core/dist/ops/mat_mul_test'); break;
    case 'ops/fused/fused_mat_mul_test': require('@tensorflow/tfjs-core/dist/ops/fused/fused_mat_mul_test'); break;
    case 'ops/sum_test': require('@tensorflow/tfjs-core/dist/ops/sum_test'); break;
    case 'ops/mean_test': require('@tensorflow/tfjs-core/dist/ops/mean_test'); break;
    case 'ops/softmax_test': require('@tensorflow/tfjs-core/dist/ops/softmax_test'); break;
    case 'ops/log_softmax_test': require('@tensorflow/tfjs-core/dist/ops/log_softmax_test'); break;
    case 'ops/tile_test': require('@tensorflow/tfjs-core/dist/ops/tile_test'); break;
    case 'ops/transpose_test': require('@tensorflow/tfjs-core/dist/ops/transpose_test'); break;
    case 'ops/batchnorm_test': require('@tensorflow/tfjs-core/dist/ops/batchnorm_test'); break;
    case 'ops/add_test': require('@tensorflow/tfjs-core/dist/ops/add_test'); break;
    case 'ops/arithmetic_test': require('@tensorflow/tfjs-core/dist/ops/arithmetic_test'); break;
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
