import { appendFileSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import type { TrainingPosition } from './checkpoints.js';
import type { EpochEvent, StepEvent } from './driver.js';
import type { RecoveryOutcome } from './recovery-machine.js';

/**
 * The run's recorded history, `history.jsonl` in the run directory: one JSON object per line, `type: "step"` or
 * `type: "epoch"`. `mnist-ddp report` draws its curves from it. Lines are appended synchronously in small writes;
 * at tens of steps per second that is cheaper than the step itself by orders of magnitude.
 */
export class HistoryWriter {
  private readonly t0 = Date.now();

  constructor(private readonly path: string) {
    mkdirSync(dirname(path), { recursive: true });
  }

  step(e: StepEvent): void {
    this.append({
      type: 'step', step: e.step, epoch: e.epoch, loss: e.loss, lr: e.lr, samplesPerSec: e.samplesPerSec, workers: e.worldSize, generation: e.generation,
      cursor: e.cursor - e.globalCount, count: e.globalCount,
      // Samples each rank processed, by rank (unequal under --balance throughput); absent when the reports were lost.
      ...(e.reports.length > 0 ? { shares: e.reports.map((r) => r.localCount) } : {}),
      time: Date.now() - this.t0,
    });
  }

  epoch(e: EpochEvent): void {
    this.append({ type: 'epoch', epoch: e.epoch, valAccuracy: e.validation?.accuracy ?? null, valLoss: e.validation?.loss ?? null, samplesPerSec: e.samplesPerSec, time: Date.now() - this.t0 });
  }

  /**
   * Training went back to `to` (a checkpoint restored after every worker was lost, or a coordinator resumed): every
   * earlier `step` record with step > to.globalStep and every `epoch` record with epoch >= to.epoch is superseded by
   * what follows. Readers apply rewind records in file order (report/write-report.ts readHistory, test/helpers/history.ts).
   */
  rewind(to: TrainingPosition, reason: string): void {
    this.append({ type: 'rewind', toStep: to.globalStep, epoch: to.epoch, cursor: to.cursor, reason, time: Date.now() - this.t0 });
  }

  /** A membership change the run survived: what it was doing, the seconds it cost, the states recovery walked. */
  recovery(outcome: RecoveryOutcome, runPhase: string): void {
    this.append({
      type: 'recovery', runPhase, secondsLost: outcome.detectSeconds + outcome.seconds, detectSeconds: outcome.detectSeconds, recoverSeconds: outcome.seconds, generation: outcome.generation, appliedStep: outcome.appliedStep,
      restoredFromStep: outcome.restoredFrom?.globalStep ?? null, path: outcome.path, time: Date.now() - this.t0,
    });
  }

  private append(record: object): void {
    appendFileSync(this.path, `${JSON.stringify(record)}\n`);
  }
}

