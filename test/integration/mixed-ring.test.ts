import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/shared/core/backend.js';
import { planDataset } from '../../src/shared/data/dataset-plan.js';
import { gatherBatch } from '../../src/shared/data/mnist.js';
import { epochOrder } from '../../src/shared/data/shard-plan.js';
import { Replica } from '../../src/shared/train/replica.js';
import type { StepPlan } from '../../src/shared/train/worker-core.js';
import type { MixedRankJob, MixedRankResult } from '../helpers/mixed-ring-rank.js';
import { probeWebgpu } from '../helpers/webgpu-probe.js';
import { b64, floats, relativeError } from '../helpers/float-buffers.js';

/**
 * Mixed rings (issue #13): ranks on different backends, each taking an unequal share of the global batch, all-reduce
 * over real ZeroMQ sockets; the reduced gradient must be the single-process gradient over the same global batch. Each
 * rank is its own process (test/helpers/mixed-ring-rank.ts). The webgpu case needs an adapter (Mesa's lavapipe on
 * CPU-only machines, scripts/install-mesa-backports.sh): without one it is skipped saying why, and with
 * MNIST_DDP_TEST_REQUIRE_WEBGPU=1 the file fails instead.
 */
const RANK = fileURLToPath(new URL('../helpers/mixed-ring-rank.ts', import.meta.url));
const probe = probeWebgpu('mixed-ring.test');

const SEED = 7;
const MODEL = 'cnn';
const BATCH_SIZE = 16;
const TRAIN_SUBSET = 600;
/** A full step of two workers at --batch-size 16, split 5 / 27: what --balance throughput gives a rank ~5× slower. */
const SHARES = [5, 27];
const PLAN: StepPlan = { generation: 1, epoch: 0, step: 3, cursor: 64, count: 32, lr: 0.05, shares: SHARES };

const children: ChildProcess[] = [];
afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

/** Starts one process per backend (rank = position), wires their ring and resolves with their results, by rank. */
async function runRing(backends: readonly string[], weights: string, deadlineMs: number): Promise<MixedRankResult[]> {
  const ranks = backends.map((backend, rank) => {
    const child = spawn(process.execPath, ['--import', 'tsx', RANK], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, MNIST_DDP_LOG_LEVEL: 'warn' } });
    children.push(child);
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-3000)));
    // JSON lines only: a native library may print its own lines to stdout.
    const json = (async function* () {
      for await (const line of createInterface({ input: child.stdout! })) if (line.startsWith('{')) yield JSON.parse(line) as unknown;
    })();
    const exited = new Promise<never>((_, reject) => child.once('exit', (code, signal) => reject(new Error(`rank ${rank} (${backend}) exited with ${signal ?? code} before answering:\n${stderr}`))));
    exited.catch(() => undefined);
    const next = async <T>(): Promise<T> => Promise.race([json.next().then((r) => r.value as T), exited]);
    const job: MixedRankJob = { backend: backend as MixedRankJob['backend'], rank, worldSize: backends.length, model: MODEL, seed: SEED, batchSize: BATCH_SIZE, trainSubset: TRAIN_SUBSET, weights, plan: PLAN };
    child.stdin!.write(`${JSON.stringify(job)}\n`);
    return { child, next };
  });
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`the ${backends.join(' + ')} ring did not finish within ${deadlineMs} ms`)), deadlineMs)));
  try {
    const endpoints = await Promise.race([Promise.all(ranks.map(async (r) => (await r.next<{ endpoint: string }>()).endpoint)), deadline]);
    for (const r of ranks) r.child.stdin!.end(`${JSON.stringify(endpoints)}\n`);
    return await Promise.race([Promise.all(ranks.map((r) => r.next<MixedRankResult>())), deadline]);
  } finally {
    clearTimeout(timer);
  }
}

describe('mixed rings: unequal shares over a real ring match one process over the global batch (issue #13)', () => {
  let reference: { weights: string; buffer: Float32Array; replica: Replica };

  beforeAll(async () => {
    await initBackend('wasm');
    const replica = await Replica.create({ model: MODEL, seed: SEED, optimizer: { name: 'sgd', momentum: 0.9, weightDecay: 0 } });
    const weights = b64(await replica.allWeights());
    // One process, the whole global batch: positions [cursor, cursor + count) of the epoch order.
    const plan = planDataset({ seed: SEED, validationSize: 0, labelFraction: 1, trainSubset: TRAIN_SUBSET });
    const ids = epochOrder(plan.train, SEED, PLAN.epoch).subarray(PLAN.cursor, PLAN.cursor + PLAN.count);
    const buffer = new Float32Array(replica.layout.bufferLength);
    await replica.computeGradients(gatherBatch(plan.data.train.images, plan.data.train.labels, ids), buffer);
    reference = { weights, buffer, replica };
  });

  function expectGlobalBatchGradient(results: readonly MixedRankResult[], tolerance: number): void {
    const { layout } = reference.replica;
    const expected = reference.buffer;
    expect(results.map((r) => r.localCount), 'each rank took its share').toEqual(SHARES);
    for (const [rank, result] of results.entries()) {
      const reduced = floats(result.reduced);
      expect(reduced.length).toBe(layout.bufferLength);
      expect(reduced[layout.countIndex], `rank ${rank}: the reduced count is the global batch`).toBe(PLAN.count);
      // Sums over unequal shares divided by the total count: the exact mean over the global batch.
      for (const slot of [...layout.trainable, ...layout.synced]) {
        expect(relativeError(reduced, expected, slot.offset, slot.offset + slot.size), `rank ${rank} (${result.backend}) ${slot.name}`).toBeLessThan(tolerance);
      }
      expect(Math.abs(reduced[layout.lossIndex]! - expected[layout.lossIndex]!) / expected[layout.lossIndex]!, `rank ${rank}: loss`).toBeLessThan(tolerance);
    }
    // The next step, run through WorkerCore: each rank reports its own share of the same global batch, and both
    // replicas apply the same reduced buffer, so their weights stay bit-identical across backends.
    expect(results.map((r) => r.report.localCount)).toEqual(SHARES);
    expect(results.every((r) => r.report.globalCount === PLAN.count)).toBe(true);
    expect(new Set(results.map((r) => r.digest)).size, `digests ${results.map((r) => r.digest).join(', ')}`).toBe(1);
  }

  it('wasm + wasm, shares 5 / 27: the reduced gradient equals the global batch\'s within 1e-5 relative', async () => {
    const results = await runRing(['wasm', 'wasm'], reference.weights, 90_000);
    expect(results.map((r) => r.backend)).toEqual(['wasm', 'wasm']);
    expectGlobalBatchGradient(results, 1e-5);
  }, 120_000);

  it.skipIf(!probe.ok)(`webgpu (${probe.adapter?.description ?? 'no adapter'}) + wasm, shares 5 / 27: the reduced gradient equals the global batch's within 1e-4 relative`, async () => {
    const results = await runRing(['webgpu', 'wasm'], reference.weights, 150_000);
    expect(results.map((r) => r.backend)).toEqual(['webgpu', 'wasm']);
    expectGlobalBatchGradient(results, 1e-4);
  }, 180_000);
});
