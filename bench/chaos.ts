/**
 * Issue #14's figures: a run that survives many worker SIGKILLs, against a fault-free run with the same seed. A
 * coordinator and 3 workers (real processes) train `cnn` on a training subset; every 2–4 s (seeded) a fault strikes:
 * one worker, two at once, or one and then another as soon as the first is declared gone (during its recovery).
 * Each killed worker is replaced at once. Prints every survived failure (phase, seconds lost), the median, whether
 * every epoch's steps tile the epoch order exactly once, and both test accuracies.
 *
 *   npx tsx bench/chaos.ts [--kills 20] [--seed 1] [--train-subset 24000] [--epochs 2] [--heartbeat-timeout-ms 2500] [--json]
 *
 * Needs a build (`npx tsc -p tsconfig.build.json`). About 3–4 minutes on a 2-core machine.
 */
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startCli, type BackgroundProcess } from '../test/helpers/cli.js';
import { readRecords, readSteps } from '../test/helpers/history.js';
import { flag, freePort, median } from './common.js';

const KILLS = Number(flag('kills', '20'));
const SEED = Number(flag('seed', '1'));
const SUBSET = flag('train-subset', '24000');
const EPOCHS = flag('epochs', '2');
const HEARTBEAT = flag('heartbeat-timeout-ms', '2500');
const JSON_OUT = process.argv.includes('--json');

let rng = SEED >>> 0 || 1;
function next(): number {
  rng ^= rng << 13;
  rng ^= rng >>> 17;
  rng ^= rng << 5;
  rng >>>= 0;
  return rng / 2 ** 32;
}

interface RunResult {
  wallSeconds: number;
  accuracy: number;
  exactlyOnce: string;
  recoveries: Array<{ runPhase: string; secondsLost: number; detectSeconds: number }>;
  kills: Array<{ kind: string; at: number }>;
}

async function run(chaos: boolean, epochSize?: number): Promise<RunResult & { epochSize: number }> {
  const dir = mkdtempSync(join(tmpdir(), `mnist-ddp-bench-chaos-${chaos ? 'faults' : 'clean'}-`));
  const runDir = join(dir, 'run');
  const [control, metrics] = await Promise.all([freePort(), freePort()]);
  const endpoint = `tcp://127.0.0.1:${control}`;
  const t0 = Date.now();
  const coordinator = startCli('coordinator', [
    'coordinator', '--bind', endpoint, '--min-workers', '3', '--coordinator-metrics-port', String(metrics), '--heartbeat-timeout-ms', HEARTBEAT,
    '--checkpoint-every', '50', '--train-subset', SUBSET, '--epochs', EPOCHS, '--validation-size', '1000', '--seed', String(SEED),
    '--backend', 'wasm', '--no-report', '--run-dir', runDir,
  ]);
  const alive = new Set<BackgroundProcess>();
  const all: BackgroundProcess[] = [coordinator];
  let n = 0;
  const spawnWorker = (): void => {
    const w = startCli(`worker ${n++}`, ['worker', '--coordinator', endpoint, '--backend', 'wasm', '--no-metrics', '--coordinator-timeout-ms', '60000']);
    alive.add(w);
    all.push(w);
    void w.exited.then(() => alive.delete(w));
  };
  for (let i = 0; i < 3; i++) spawnWorker();
  const kills: RunResult['kills'] = [];
  let done = false;
  const exited = coordinator.exited.then((code) => {
    done = true;
    return code;
  });
  const kill = (kind: string): void => {
    const victims = [...alive];
    if (victims.length === 0) return;
    const v = victims[Math.floor(next() * victims.length)]!;
    alive.delete(v);
    v.child.kill('SIGKILL');
    kills.push({ kind, at: (Date.now() - t0) / 1000 });
    spawnWorker();
  };
  const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
  const gone = (): number => coordinator.stderr().match(/is gone/g)?.length ?? 0;
  if (chaos) {
    // Wait for training to start before the first fault.
    while (!done && readSteps(runDir).length < 10) await sleep(200);
    for (let i = 0; !done && kills.length < KILLS; i++) {
      await sleep(2000 + 2000 * next());
      if (done) break;
      const kind = (['during-recovery', 'pair', 'during-recovery', 'single'] as const)[i % 4]!;
      if (kind === 'pair') {
        kill('pair');
        kill('pair');
      } else if (kind === 'during-recovery') {
        const before = gone();
        kill('first');
        const deadline = Date.now() + 10_000;
        // The second kill lands as the coordinator starts recovering from the first (recovery itself takes ~10–150 ms).
        while (!done && gone() <= before && Date.now() < deadline) await sleep(10);
        kill('during-recovery');
      } else kill('single');
    }
  }
  const code = await exited;
  await Promise.all(all.map((p) => p.stop(0)));
  if (code !== 0) throw new Error(`coordinator exited with ${code}:\n${coordinator.stderr().slice(-3000)}`);
  const steps = readSteps(runDir);
  // The epoch's size: what the fault-free run's epoch 0 steps add up to.
  const size = epochSize ?? steps.filter((x) => x.epoch === 0).reduce((a, x) => a + x.count, 0);
  let exactlyOnce = 'ok';
  for (let e = 0; e < Number(EPOCHS); e++) {
    let expected = 0;
    for (const s of steps.filter((x) => x.epoch === e)) {
      if (s.cursor !== expected) exactlyOnce = `epoch ${e}: step ${s.step} starts at ${s.cursor}, expected ${expected}`;
      expected += s.count;
    }
    if (expected !== size && exactlyOnce === 'ok') exactlyOnce = `epoch ${e}: ${expected} of ${size} samples`;
  }
  const evaluation = JSON.parse(readFileSync(join(runDir, 'eval.json'), 'utf8')) as { accuracy: number };
  const recoveries = readRecords(runDir).filter((r) => r.type === 'recovery').map((r) => ({ runPhase: String(r.runPhase), secondsLost: Number(r.secondsLost), detectSeconds: Number(r.detectSeconds) }));
  return { wallSeconds: (Date.now() - t0) / 1000, accuracy: evaluation.accuracy, exactlyOnce, recoveries, kills, epochSize: size };
}

const clean = await run(false);
const faults = await run(true, clean.epochSize);
const lost = faults.recoveries.map((r) => r.secondsLost);
const summary = {
  seed: SEED, kills: faults.kills.length, pairs: faults.kills.filter((k) => k.kind === 'pair').length / 2,
  duringRecovery: faults.kills.filter((k) => k.kind === 'during-recovery').length,
  recoveries: faults.recoveries.length, medianSecondsLost: median(lost), maxSecondsLost: Math.max(...lost),
  secondsLostPerKill: lost.reduce((a, b) => a + b, 0) / Math.max(1, faults.kills.length),
  exactlyOnce: faults.exactlyOnce, faultFreeExactlyOnce: clean.exactlyOnce, accuracy: faults.accuracy, faultFreeAccuracy: clean.accuracy,
  wallSeconds: faults.wallSeconds, faultFreeWallSeconds: clean.wallSeconds, heartbeatTimeoutMs: Number(HEARTBEAT),
};
if (JSON_OUT) process.stdout.write(`${JSON.stringify({ ...summary, recoveriesDetail: faults.recoveries, killsDetail: faults.kills })}\n`);
else {
  for (const k of faults.kills) process.stdout.write(`${k.at.toFixed(1)} s: SIGKILL (${k.kind})\n`);
  for (const r of faults.recoveries) process.stdout.write(`survived during ${r.runPhase}: ${r.secondsLost.toFixed(2)} s lost (${r.detectSeconds.toFixed(2)} s to detect)\n`);
  process.stdout.write(`${JSON.stringify(summary, null, 2)}\n`);
}
