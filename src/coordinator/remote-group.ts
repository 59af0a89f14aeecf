import { MnistDdpError } from '../shared/core/errors.js';
import type { Logger } from '../shared/core/log.js';
import type { ParamLayout } from '../shared/model/layout.js';
import type { EvaluationCounts } from '../shared/train/evaluator.js';
import type { WorkerMessage } from '../shared/wire/control-messages.js';
import type { EvalSplit, ReplicaSnapshot } from '../shared/wire/control-payloads.js';
import { Admission } from './admission.js';
import type { ControlServer } from './control-server.js';
import type { StepOrder, StepResult, WorkerGroup } from './driver.js';
import { evaluateOnWorkers } from './evaluation-merge.js';
import { Membership, type WorkerRecord } from './membership.js';
import { recover } from './recovery.js';
import { formRing } from './ring-formation.js';
import { StepRounds } from './rounds.js';
import { ReplyCollector } from './stall.js';
import { StateTransfer } from './state-transfer.js';

export interface RemoteGroupOptions {
  /** The run's config, sent to every worker in `welcome`. */
  config: Record<string, unknown>;
  model: string;
  layout: ParamLayout;
  /** Deadline for a reply to any request (join, ring formation, snapshot); evaluation gets 4×. */
  requestTimeoutMs: number;
  /** Deadline for every rank to finish one step. */
  stepTimeoutMs: number;
  /** A worker silent (no heartbeat) for this long is declared gone. */
  heartbeatTimeoutMs: number;
  /** Compare replica weight digests every K steps (0 = never). */
  digestEvery: number;
  /** Survive workers leaving or dying (re-form the ring and redo the step) instead of failing the run. */
  elastic: boolean;
  log: Logger;
  /** The control socket is CURVE: workers must bring ring keys, and the ring is formed with them (issue #15). */
  curve?: boolean;
  onMembershipChange?: (active: readonly WorkerRecord[], generation: number) => void;
  /**
   * Awaited at the end of close(), once the workers were told to stop and the socket is closed: the owner's own
   * clean-up (startLocalWorkerGroup waits for its worker processes here).
   */
  onClosed?: () => Promise<void>;
}

/**
 * The coordinator's side of distributed training, as a WorkerGroup over worker processes behind one ROUTER socket.
 * It routes each inbound message (admission.ts: membership; stall.ts: replies someone waits for; rounds.ts: late
 * step reports) and composes the parts: ring formation per generation, step rounds with deadlines and digests,
 * state transfer, exact-count evaluation, and elastic re-forming at step boundaries or after a failure (recovery.ts).
 */
export class RemoteWorkerGroup implements WorkerGroup {
  private readonly members = new Membership();
  private readonly replies: ReplyCollector;
  private readonly admission: Admission;
  private readonly rounds: StepRounds;
  private readonly transfer: StateTransfer;
  private requestIds = 0;

  constructor(private readonly server: ControlServer, private readonly options: RemoteGroupOptions) {
    const { log, requestTimeoutMs } = options;
    this.replies = new ReplyCollector({ log, elastic: options.elastic });
    this.admission = new Admission(server, this.members, options);
    this.rounds = new StepRounds(server, this.members, this.replies, options);
    this.transfer = new StateTransfer(server, this.replies, { requestTimeoutMs, nextRequestId: () => ++this.requestIds });
    server.onMessage((peer, message) => this.dispatch(peer, message));
  }

  get pipelineDepth(): number {
    return this.rounds.pipelineDepth;
  }

  get worldSize(): number {
    return this.members.active.length;
  }

  get generation(): number {
    return this.members.generation;
  }

  get activeWorkers(): readonly WorkerRecord[] {
    return this.members.active;
  }

  private dispatch(peer: string, m: WorkerMessage): void {
    const worker = this.members.byPeer(peer);
    if (worker) worker.lastSeen = Date.now();
    if (this.admission.handle(peer, worker, m) || this.replies.offer(peer, m)) return;
    if (worker && this.rounds.acceptLateReport(worker, m)) return;
    this.server.reject('unexpected', peer, `${m.type} from ${worker ? `worker ${worker.id}` : 'an unknown peer'} matches no pending request`);
  }

  waitForWorkers(n: number, timeoutMs: number): Promise<void> {
    return this.admission.waitForWorkers(n, timeoutMs);
  }

  private formRing(): Promise<void> {
    return formRing(this.server, this.members, this.replies, this.options);
  }

  /** Initial formation: wait for `n` workers, form the ring, give every replica the same starting state. */
  async start(n: number, joinTimeoutMs: number, initial: ReplicaSnapshot, appliedStep: number): Promise<void> {
    await this.waitForWorkers(n, joinTimeoutMs);
    await this.formRing();
    await this.transfer.load(this.members.active, this.generation, { snapshot: initial, appliedStep });
  }

  membershipChangePending(): boolean {
    return this.members.admitted.some((w) => w.status === 'admitted') || this.members.active.some((w) => w.leaving);
  }

  /** At a step boundary: admit joiners and release leavers by re-forming the ring; joiners get the current state. */
  async beforeStep(): Promise<void> {
    const joiners = this.members.admitted.filter((w) => w.status === 'admitted');
    const leavers = this.members.active.filter((w) => w.leaving);
    if (joiners.length === 0 && leavers.length === 0) return;
    const source = this.members.active.find((w) => !w.leaving);
    const state = joiners.length > 0 && source ? await this.transfer.snapshotFrom(source) : undefined;
    for (const w of leavers) {
      w.status = 'gone';
      void this.server.send(w.peer, { type: 'stop', reason: 'left the ring' });
    }
    await this.formRing();
    if (state) await this.transfer.load(this.members.active.filter((w) => joiners.includes(w)), this.generation, state);
  }

  runStep(plan: StepOrder): Promise<StepResult> {
    return this.rounds.run(plan);
  }

  recover(failedStep: number): Promise<number> {
    return recover(failedStep, this.members, this.transfer, { ...this.options, formRing: () => this.formRing() });
  }

  async snapshot(): Promise<ReplicaSnapshot> {
    return (await this.transfer.snapshotFrom(this.members.active[0]!)).snapshot;
  }

  evaluate(split: EvalSplit, mistakes = 0): Promise<EvaluationCounts> {
    return evaluateOnWorkers(this.server, this.replies, [...this.members.active], { requestId: ++this.requestIds, split, mistakes, timeoutMs: this.options.requestTimeoutMs * 4 });
  }

  async close(reason = 'training finished'): Promise<void> {
    this.replies.abortAll(new MnistDdpError('GROUP_CLOSED', `the coordinator closed the group: ${reason}`));
    await Promise.all(this.members.all.filter((w) => w.status !== 'gone').map((w) => this.server.send(w.peer, { type: 'stop', reason }).catch(() => undefined)));
    this.server.close();
    await this.options.onClosed?.();
  }
}
