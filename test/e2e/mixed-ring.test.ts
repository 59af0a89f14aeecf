import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { startCli, type BackgroundProcess } from '../helpers/cli.js';
import { expectRunAccountedOnce } from '../helpers/exactly-once.js';
import { loopbackCoordinator } from '../helpers/net.js';
import { probeWebgpu } from '../helpers/webgpu-probe.js';

/**
 * Issue #13, mixed rings, on real processes: a coordinator, one webgpu worker and one wasm worker. Under --balance
 * auto the ring mixes devices, so after a few measured steps each worker's share of the global batch follows its
 * measured throughput. The run must still use every sample exactly once, keep the replicas identical (digests every
 * 5 steps) and finish. Needs a WebGPU adapter (lavapipe on CPU-only machines); skipped saying why without one.
 */
const probe = probeWebgpu('e2e/mixed-ring.test');
const TRAIN_SAMPLES = 1600;
const BATCH_SIZE = 16;
const processes: BackgroundProcess[] = [];

afterAll(async () => {
  await Promise.all(processes.map((p) => p.stop(0)));
});

interface SharesLog {
  msg: string;
  generation: number;
  shares: Array<{ rank: number; device: string; share: number; samplesPerSec?: number }>;
}

describe.skipIf(!probe.ok)(`a webgpu (${probe.adapter?.description ?? 'no adapter'}) and a wasm worker in one run`, () => {
  it('balances the global batch by measured throughput, uses every sample once and keeps the replicas identical', async () => {
    const runDir = join(mkdtempSync(join(tmpdir(), 'mnist-ddp-mixed-')), 'run');
    const { endpoint, flags } = await loopbackCoordinator();
    const coordinator = startCli('coordinator', [
      'coordinator', ...flags, '--min-workers', '2', '--model', 'mlp',
      '--batch-size', String(BATCH_SIZE), '--train-subset', String(TRAIN_SAMPLES), '--epochs', '1', '--validation-size', '500', '--warmup-steps', '0',
      '--digest-every', '5', '--backend', 'wasm', '--no-report', '--run-dir', runDir,
    ], { env: { MNIST_DDP_LOG_LEVEL: 'info' } });
    processes.push(coordinator);
    for (const backend of ['webgpu', 'wasm']) {
      processes.push(startCli(`worker (${backend})`, ['worker', '--coordinator', endpoint, '--backend', backend, '--no-metrics']));
    }
    const code = await Promise.race([coordinator.exited, new Promise<'hung'>((r) => setTimeout(() => r('hung'), 150_000))]);
    expect(code, coordinator.stderr().slice(-3000)).toBe(0);

    const logs = coordinator.stderr().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { msg?: string })
      .filter((l): l is SharesLog => /batch shares/.test(l.msg ?? ''));
    // One line when the generation started (equal until both are measured), one when the shares were rebalanced.
    expect(logs[0]?.msg, JSON.stringify(logs)).toMatch(/^generation \d+: batch shares equal until every worker is measured \(--balance auto: the ring mixes devices\)/);
    const rebalanced = logs.find((l) => /rebalanced by measured throughput/.test(l.msg));
    expect(rebalanced, JSON.stringify(logs)).toBeDefined();
    const [a, b] = rebalanced!.shares;
    expect(new Set([a!.device.split(' ')[0], b!.device.split(' ')[0]])).toEqual(new Set(['webgpu', 'wasm']));
    expect(a!.share + b!.share).toBe(2 * BATCH_SIZE);
    // The faster device takes the larger share.
    const [fast, slow] = a!.samplesPerSec! > b!.samplesPerSec! ? [a!, b!] : [b!, a!];
    expect(fast.share, JSON.stringify(rebalanced)).toBeGreaterThan(slow.share);

    const steps = expectRunAccountedOnce(runDir, TRAIN_SAMPLES, 0.6);
    for (const s of steps) expect(s.shares?.reduce((x, y) => x + y, 0), `step ${s.step}`).toBe(s.count);
    expect(steps.some((s) => s.shares![fast.rank]! > s.shares![slow.rank]!), 'steps ran with unequal shares').toBe(true);
  }, 200_000);
});
