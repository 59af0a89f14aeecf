import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { startCli, type BackgroundProcess } from '../helpers/cli.js';
import { expectRunAccountedOnce } from '../helpers/exactly-once.js';
import { readRecords, readSteps } from '../helpers/history.js';
import { loopbackCoordinator } from '../helpers/net.js';
import { untilRecorded } from '../helpers/run-dir.js';

// Issue #14: a seeded chaos run with real processes. Workers are SIGKILLed one at a time, two at once and while the
// coordinator is still recovering from the previous kill; one is frozen (SIGSTOP) and thawed (SIGCONT) as a
// straggler; the coordinator itself is SIGKILLed after a periodic checkpoint and restarted over its run directory.
// Replacements join a moment after each kill. The run must finish with every sample of the epoch order used exactly
// once (checked from history.jsonl, honouring its rewind records, and from the optimiser's update count), and every
// survived failure must be recorded with its phase and the seconds it cost.

const SEED = Number(process.env.CHAOS_SEED ?? Date.now() % 100_000);
const dir = mkdtempSync(join(tmpdir(), 'mnist-ddp-chaos-'));
const runDir = join(dir, 'run');
// About 270 steps of 32 per worker with three workers (more with two): after the long freeze (3b) the two others train
// on while the thawed worker rejoins, and a checkpoint and three more steps must still come before the epoch ends.
const TRAIN_SAMPLES = 25_600;
const processes: BackgroundProcess[] = [];

/** xorshift32 from SEED: which worker dies is reproducible. */
let rng = SEED >>> 0 || 1;
function pick<T>(items: readonly T[]): T {
  rng ^= rng << 13;
  rng ^= rng >>> 17;
  rng ^= rng << 5;
  rng >>>= 0;
  return items[rng % items.length]!;
}

function start(name: string, args: string[]): BackgroundProcess {
  const proc = startCli(name, args);
  processes.push(proc);
  return proc;
}

afterAll(async () => {
  await Promise.all(processes.map((p) => p.stop(0)));
});

describe('chaos', () => {
  it('survives worker kills (single, double, during recovery), a straggler and a coordinator kill, exactly once', async () => {
    process.stdout.write(`chaos seed ${SEED} (rerun with CHAOS_SEED=${SEED})\n`);
    const { endpoint, flags } = await loopbackCoordinator();
    // --min-workers 2, not 3: below it the coordinator waits for joiners (issue #14), and the kill at the epoch end
    // gets no replacement; the run goes on with two there, and waits for replacements after the double kills.
    const coordinatorArgs = [
      'coordinator', ...flags, '--min-workers', '2',
      '--heartbeat-timeout-ms', '2500', '--rejoin-timeout-ms', '30000', '--checkpoint-every', '15', '--digest-every', '10',
      '--train-subset', String(TRAIN_SAMPLES), '--epochs', '1', '--validation-size', '500', '--batch-size', '32', '--seed', String(SEED % 1000),
      '--backend', 'wasm', '--no-report', '--run-dir', runDir,
    ];
    let coordinator = start('coordinator', coordinatorArgs);
    let workerCount = 0;
    const alive = new Set<BackgroundProcess>();
    const spawnWorker = (): void => {
      const w = start(`worker ${workerCount++}`, ['worker', '--coordinator', endpoint, '--backend', 'wasm', '--ring-timeout-ms', '8000', '--coordinator-timeout-ms', '60000', '--no-metrics']);
      alive.add(w);
      void w.exited.then(() => alive.delete(w));
    };
    for (let i = 0; i < 3; i++) spawnWorker();
    const kills: Array<{ what: string; at: number }> = [];
    const kill = (what: string, signal: NodeJS.Signals = 'SIGKILL'): BackgroundProcess => {
      const victim = pick([...alive]);
      alive.delete(victim);
      victim.child.kill(signal);
      kills.push({ what: `${what}: ${victim.name}`, at: Date.now() });
      return victim;
    };
    const describeLast = (): string => `\nseed ${SEED}\n${coordinator.stderr().slice(-3000)}`;
    const steps = (): number => readSteps(runDir).length;
    const untilStep = (n: number, what: string): Promise<true> =>
      untilRecorded(runDir, what, () => (steps() >= n ? true : undefined), { deadlineMs: 40_000, describeLast });
    const recoveries = (): number => readRecords(runDir).filter((r) => r.type === 'recovery').length;
    const untilRecoveries = (n: number, what: string): Promise<true> =>
      untilRecorded(runDir, what, () => (recoveries() >= n ? true : undefined), { deadlineMs: 40_000, describeLast });

    const goneCount = (): number => coordinator.stderr().match(/is gone/g)?.length ?? 0;
    const untilGone = (n: number, what: string): Promise<true> =>
      untilRecorded(runDir, what, () => (goneCount() >= n ? true : undefined), { deadlineMs: 20_000, describeLast });
    // Replacements are admitted at a step boundary: wait until steps run with three workers again.
    const untilThreeWorkers = (what: string): Promise<true> => {
      const from = steps();
      return untilRecorded(runDir, what, () => (readSteps(runDir).slice(from).some((r) => r.workers === 3) ? true : undefined), { deadlineMs: 40_000, describeLast });
    };

    // 1. One worker SIGKILLed mid-epoch, and a second one as soon as the first is declared gone (during its
    //    recovery); one original worker survives and holds the state. Replacements start at once.
    await untilStep(8, '8 steps');
    kill('kill');
    await untilGone(1, 'the first kill noticed');
    kill('kill during recovery');
    spawnWorker();
    spawnWorker();
    await untilRecoveries(1, 'recovery from the first kills');
    await untilThreeWorkers('the replacements admitted');
    // 2. A straggler: frozen for a second (under the heartbeat timeout), then thawed. Not a death.
    const frozen = pick([...alive]);
    frozen.child.kill('SIGSTOP');
    await new Promise((r) => setTimeout(r, 1000));
    frozen.child.kill('SIGCONT');
    // 3. Two at once; replacements for both.
    await untilStep(steps() + 4, '4 more steps');
    const before = recoveries();
    kill('double kill');
    kill('double kill');
    spawnWorker();
    spawnWorker();
    await untilRecoveries(before + 1, 'recovery from the double kill');
    await untilThreeWorkers('the replacements admitted');
    // 3b. A straggler frozen for longer than the heartbeat timeout: declared gone, the ring re-forms without it; when
    //     thawed, its heartbeat gets a hello-again and it rejoins as a new worker.
    const helloAgains = (): number => coordinator.stderr().match(/asking it to say hello again/g)?.length ?? 0;
    const longFrozen = pick([...alive]);
    const goneBefore = goneCount();
    longFrozen.child.kill('SIGSTOP');
    await untilGone(goneBefore + 1, 'the frozen worker declared gone');
    longFrozen.child.kill('SIGCONT');
    await untilRecorded(runDir, 'the thawed worker asked to say hello again', () => (helloAgains() >= 1 ? true : undefined), { deadlineMs: 20_000, describeLast });
    const joinsBefore = readRecords(runDir).filter((r) => r.type === 'recovery' && r.runPhase === 'join').length;
    await untilRecorded(runDir, 'the thawed worker back in the ring', () => (readRecords(runDir).filter((r) => r.type === 'recovery' && r.runPhase === 'join').length > joinsBefore ? true : undefined), { deadlineMs: 30_000, describeLast });
    // 4. The coordinator SIGKILLed after a periodic checkpoint, restarted over its run directory (as pm2 would).
    await untilRecorded(runDir, 'a periodic checkpoint', () => (existsSync(join(runDir, 'checkpoints')) ? true : undefined), { deadlineMs: 40_000, describeLast });
    await untilStep(steps() + 3, '3 more steps');
    const recordedBeforeKill = steps();
    coordinator.child.kill('SIGKILL');
    kills.push({ what: 'coordinator kill', at: Date.now() });
    await coordinator.exited;
    coordinator = start('coordinator (restarted)', coordinatorArgs);
    const restartedAt = Date.now();
    // The old workers reconnect by themselves (hello-again) and training resumes from the checkpoint.
    const resumedStep = (): true | undefined => {
      const records = readRecords(runDir);
      const at = records.findIndex((r) => r.type === 'rewind' && r.reason === 'resumed from a checkpoint');
      return at >= 0 && records.slice(at).some((r) => r.type === 'step') ? true : undefined;
    };
    await untilRecorded(runDir, 'a step after the coordinator restart', resumedStep, { deadlineMs: 40_000, describeLast });
    const restartSeconds = (Date.now() - restartedAt) / 1000;
    // At most one checkpoint interval (--checkpoint-every 15) of recorded steps is redone after the restart.
    const resumedFrom = readRecords(runDir).find((r) => r.type === 'rewind' && r.reason === 'resumed from a checkpoint')!;
    expect(recordedBeforeKill - (resumedFrom.toStep as number), 'steps lost to the coordinator kill').toBeLessThanOrEqual(15);
    // 5. A worker SIGKILLed once the epoch's record is written: during the epoch-end checkpoint or the final test
    //    evaluation, both inside the recovery path now.
    const epochRecords = (): number => readSteps(runDir).length > 0 ? readRecords(runDir).filter((r) => r.type === 'epoch').length : 0;
    await untilRecorded(runDir, 'the epoch record', () => (epochRecords() >= 1 ? true : undefined), { deadlineMs: 60_000, describeLast });
    kill('kill at the epoch end');

    const code = await Promise.race([coordinator.exited, new Promise<'hung'>((r) => setTimeout(() => r('hung'), 60_000))]);
    expect(code, describeLast()).toBe(0);

    expectRunAccountedOnce(runDir, TRAIN_SAMPLES, 0.8);

    const survived = readRecords(runDir).filter((r) => r.type === 'recovery');
    expect(survived.length).toBeGreaterThanOrEqual(5);
    expect(survived.filter((r) => r.runPhase !== 'step' && r.runPhase !== 'join').length, 'a recovery at the epoch end').toBeGreaterThanOrEqual(1);
    for (const r of survived) {
      expect(typeof r.runPhase).toBe('string');
      expect(typeof r.secondsLost).toBe('number');
    }
    process.stdout.write(`chaos seed ${SEED}: ${kills.map((k) => k.what).join('; ')}\n` +
      survived.map((r) => `  survived during ${String(r.runPhase)}: ${(r.secondsLost as number).toFixed(2)} s lost (${(r.detectSeconds as number).toFixed(2)} s to detect), ` +
        `generation ${String(r.generation)}${r.restoredFromStep !== null ? `, restored the checkpoint of step ${String(r.restoredFromStep)}` : ''}\n`).join('') +
      `  coordinator restart: first step ${restartSeconds.toFixed(1)} s after the new process started, resumed at step ${String(readRecords(runDir).filter((r) => r.type === 'rewind' && r.reason === 'resumed from a checkpoint').map((r) => r.toStep).join(', '))}\n`);
  }, 180_000);
});
