import { MnistDdpError } from '../shared/core/errors.js';
import type { Logger } from '../shared/core/log.js';
import type { WorkerMessage } from '../shared/wire/control-messages.js';
import type { StepReport } from '../shared/wire/control-payloads.js';
import { BatchBalancer, type BalanceSettings } from './balance.js';
import type { ControlServer } from './control-server.js';
import type { StepOrder, StepResult } from './driver.js';
import type { Membership, WorkerRecord } from './membership.js';
import type { ReplyCollector, WorkerReplies } from './stall.js';

export interface StepRoundSettings {
  /** Deadline for every rank to finish one step (timed from when the previous order settled). */
  stepTimeoutMs: number;
  /** Compare replica weight digests every K steps (0 = never). */
  digestEvery: number;
  log: Logger;
  /** How each step's global batch is split among the ranks (absent: equally). */
  balance?: Omit<BalanceSettings, 'log'>;
}

/**
 * Step rounds: one order to every active rank, one step-done back from each, checked against the plan (each rank
 * processed its share, and the shares add up to the global batch) and, every `digestEvery` steps, against each other
 * (identical weights). The order names the ranks' shares when they are unequal (balance.ts), which the reports then
 * measure. Two orders may be in flight, so every worker has its next order queued before it finishes the current step.
 */
export class StepRounds {
  readonly pipelineDepth = 2;
  /** Settles when the last ordered step has (the next order's deadline starts then). */
  private previousStep: Promise<unknown> | undefined;
  /** Highest step number ordered so far: replies about steps up to it that nobody waits for are late, not unexpected. */
  private highestOrdered = -1;
  private readonly balancer: BatchBalancer | undefined;

  constructor(
    private readonly server: ControlServer,
    private readonly members: Membership,
    private readonly replies: ReplyCollector,
    private readonly settings: StepRoundSettings,
  ) {
    this.balancer = settings.balance ? new BatchBalancer({ ...settings.balance, log: settings.log }) : undefined;
  }

  async run(plan: StepOrder): Promise<StepResult> {
    const generation = this.members.generation;
    const workers = [...this.members.active];
    const digest = this.settings.digestEvery > 0 && plan.step % this.settings.digestEvery === 0;
    const shares = this.balancer?.sharesFor(workers, generation, plan.step, plan.count);
    const done = this.replies.collect('step-done', workers, this.settings.stepTimeoutMs, `step ${plan.step}`, {
      match: (m) => m.generation === generation && m.step === plan.step,
      matchError: (e) => e.generation === generation && e.step === plan.step,
      armAfter: this.previousStep,
    });
    this.previousStep = done.catch(() => undefined);
    this.highestOrdered = Math.max(this.highestOrdered, plan.step);
    await this.server.broadcast(workers, () => ({ type: 'step', generation, ...plan, ...(shares ? { shares } : {}), digest }), done);
    const replies = await done;
    // A step-done message is a StepReport with its routing fields (type, generation, step, digest) around it.
    const reports: StepReport[] = workers.map((w) => replies.get(w.id)!);
    const localTotal = reports.reduce((a, r) => a + r.localCount, 0);
    if (localTotal !== plan.count || reports.some((r) => r.globalCount !== plan.count)) {
      throw new MnistDdpError('FRAME_UNEXPECTED', `step ${plan.step}: ranks processed ${localTotal} samples (global counts ${reports.map((r) => r.globalCount).join('/')}), expected ${plan.count}`, { step: plan.step });
    }
    if (shares && reports.some((r, rank) => r.localCount !== shares[rank])) {
      throw new MnistDdpError('FRAME_UNEXPECTED', `step ${plan.step}: ranks processed ${reports.map((r) => r.localCount).join('/')} samples, ordered ${shares.join('/')}`, { step: plan.step, shares });
    }
    this.balancer?.record(workers, reports);
    if (digest) checkDigests(plan.step, workers, replies);
    return { loss: reports[0]!.loss, reports };
  }

  /**
   * A report about a step that already failed (another rank's, or of the order queued behind it) that nothing waits
   * for any more: logged and dropped. Anything about a step never ordered is not late (the caller rejects it).
   */
  acceptLateReport(worker: WorkerRecord, m: WorkerMessage): boolean {
    if ((m.type !== 'worker-error' && m.type !== 'step-done') || m.generation > this.members.generation || m.step > this.highestOrdered) return false;
    this.settings.log.info({ worker: worker.id, step: m.step, generation: m.generation, ...(m.type === 'worker-error' ? { code: m.code } : {}) },
      `late report from rank ${worker.rank}: step ${m.step} ${m.type === 'worker-error' ? m.code : 'done'}`);
    return true;
  }
}

function checkDigests(step: number, workers: readonly WorkerRecord[], replies: WorkerReplies<'step-done'>): void {
  const digests = workers.map((w) => ({ rank: w.rank, digest: replies.get(w.id)!.digest }));
  if (new Set(digests.map((d) => d.digest)).size !== 1) {
    throw new MnistDdpError('REPLICA_DIVERGED', `after step ${step} the replicas differ: ${digests.map((d) => `rank ${d.rank} ${d.digest}`).join(', ')}; stopping (check that every worker runs the same backend and mnist-ddp version)`, { step, digests });
  }
}
