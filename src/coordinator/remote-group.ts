import { MnistDdpError, type ErrorCode } from '../shared/core/errors.js';
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
import type { TrainingPosition } from './checkpoints.js';
import { LivenessMonitor } from './liveness.js';
import { runRecovery, type RecoveryOutcome, type RecoveryTrigger, type RestorePoint } from './recovery-machine.js';
import type { Collective } from '../shared/wire/collectives.js';
import { formRing } from './ring-formation.js';
import { StepRounds, type StepRoundSettings } from './rounds.js';
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
  /** A worker silent (no heartbeat) for this long is declared gone, whatever the run is doing. */
  heartbeatTimeoutMs: number;
  /** With fewer than `minWorkers` left, how long recovery waits for joiners before failing the run (default 60 s). */
  rejoinTimeoutMs?: number;
  /** Workers the run needs (--min-workers, default 1): below it, recovery waits for joiners (elastic) or fails at once. */
  minWorkers?: number;
  /** Compare replica weight digests every K steps (0 = never). */
  digestEvery: number;
  /** How each step's global batch is split among the ranks (--balance; absent: equally). */
  balance?: StepRoundSettings['balance'];
  /** Survive workers leaving or dying (re-form the ring and redo the step) instead of failing the run. */
  elastic: boolean;
  log: Logger;
  /** The control socket is CURVE: workers must bring ring keys, and the ring is formed with them (issue #15). */
  curve?: boolean;
  /** The all-reduce each generation uses, by its world size (--collective); absent: the ring. */
  collectiveFor?: (worldSize: number) => Collective;
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
  private readonly liveness: LivenessMonitor;
  private requestIds = 0;
  /** What joiners get when no survivor holds the state: the latest checkpoint (the initial state at first). */
  private restorePoint: RestorePoint | undefined;
  private readonly membershipListeners = new Set<() => void>();
  /** When each unknown peer was last told to say hello again (one reply per heartbeat second is enough). */
  private readonly helloAgainSent = new Map<string, number>();

  constructor(private readonly server: ControlServer, private readonly options: RemoteGroupOptions) {
    const { log, requestTimeoutMs } = options;
    this.replies = new ReplyCollector({ log, elastic: options.elastic });
    this.admission = new Admission(server, this.members, { ...options, onAdmitted: () => this.membershipChanged() });
    this.rounds = new StepRounds(server, this.members, this.replies, options);
    this.transfer = new StateTransfer(server, this.replies, { requestTimeoutMs, nextRequestId: () => ++this.requestIds });
    this.liveness = new LivenessMonitor(() => this.members.all, { heartbeatTimeoutMs: options.heartbeatTimeoutMs, onGone: (w, why) => this.declareGone(w, why) });
    server.onMessage((peer, message) => this.dispatch(peer, message));
    server.onDisconnect(() => this.liveness.suspect());
    this.liveness.start();
  }

  /**
   * `w` is gone: every wait on it fails now, and the ring's other members are told to abort their all-reduce (they
   * would otherwise wait out their ring timeout). Logged once per worker.
   */
  private declareGone(w: WorkerRecord, why: string): void {
    if (w.status === 'gone') return;
    const wasActive = w.status === 'active';
    w.status = 'gone';
    w.goneAt = Date.now();
    this.options.log.warn({ worker: w.id, rank: w.rank, why }, `rank ${w.rank} (worker ${w.id}) is gone: ${why}`);
    this.replies.memberLost(w, why);
    if (wasActive || w.rank >= 0) {
      const reason = `rank ${w.rank} (worker ${w.id}) is gone`;
      this.abortRing(reason);
      // If it was only frozen (a straggler), it ends its own wait when it wakes, and its next heartbeat rejoins it.
      void this.server.send(w.peer, { type: 'abort', generation: this.members.generation, reason }).catch(() => undefined);
    }
    this.membershipChanged();
  }

  /**
   * Tells every live worker of the current ring, or of the one being formed, that its generation is over: a pending
   * all-reduce or ring start-up barrier ends now.
   */
  private abortRing(reason: string): void {
    const generation = this.members.generation;
    for (const m of this.members.all) {
      if (m.status === 'active' || (m.status === 'admitted' && m.rank >= 0)) void this.server.send(m.peer, { type: 'abort', generation, reason }).catch(() => undefined);
    }
  }

  private membershipChanged(): void {
    for (const listener of [...this.membershipListeners]) listener();
  }

  private untilMembershipChanges(deadline: number): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.membershipListeners.delete(done);
        resolve();
      };
      const timer = setTimeout(done, Math.max(0, deadline - Date.now()));
      this.membershipListeners.add(done);
    });
  }

  /** The latest checkpoint's state and position: what recovery restores when no worker holds the state. */
  setRestorePoint(snapshot: ReplicaSnapshot, position: TrainingPosition): void {
    this.restorePoint = { state: { snapshot, appliedStep: position.globalStep - 1 }, position };
  }

  private recovery(trigger: RecoveryTrigger): Promise<RecoveryOutcome> {
    return runRecovery(trigger, {
      members: this.members, log: this.options.log, heartbeatTimeoutMs: this.options.heartbeatTimeoutMs,
      // --no-elastic fails fast: below the minimum there is no wait for joiners.
      rejoinTimeoutMs: this.options.elastic ? this.options.rejoinTimeoutMs ?? 60_000 : 0, minWorkers: this.options.minWorkers ?? 1,
      declareGone: (w, why) => this.declareGone(w, why),
      abortGeneration: (reason) => this.abortRing(reason),
      release: (w) => {
        w.status = 'gone';
        void this.server.send(w.peer, { type: 'stop', reason: 'left the ring' });
      },
      membershipChanged: (deadline) => this.untilMembershipChanges(deadline),
      snapshotFrom: (w) => this.transfer.snapshotFrom(w),
      formRing: () => this.formRing(),
      load: (workers, generation, state) => this.transfer.load(workers, generation, state),
      restorePoint: () => {
        if (!this.restorePoint) throw new MnistDdpError('INVARIANT_VIOLATED', 'recovery needs a restore point before the group started', {});
        return this.restorePoint;
      },
    });
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
    if (!worker && m.type === 'heartbeat') return this.helloAgain(peer);
    if (this.admission.handle(peer, worker, m) || this.replies.offer(peer, m)) return;
    if (worker && this.rounds.acceptLateReport(worker, m)) return;
    this.server.reject('unexpected', peer, `${m.type} from ${worker ? `worker ${worker.id}` : 'an unknown peer'} matches no pending request`);
  }

  /**
   * A heartbeat from a worker this coordinator does not know (it restarted, or declared the worker gone while it was
   * stopped): tell it to say hello again, so it rejoins within a second instead of waiting out its own deadline.
   */
  private helloAgain(peer: string): void {
    const now = Date.now();
    if (now - (this.helloAgainSent.get(peer) ?? 0) < 1000) return;
    this.helloAgainSent.set(peer, now);
    this.options.log.warn({ peer }, 'heartbeat from an unknown worker; asking it to say hello again');
    void this.server.send(peer, { type: 'hello-again', reason: 'this coordinator does not know this worker (it restarted, or declared the worker gone)' }).catch(() => undefined);
  }

  waitForWorkers(n: number, timeoutMs: number): Promise<void> {
    return this.admission.waitForWorkers(n, timeoutMs);
  }

  private formRing(): Promise<void> {
    return formRing(this.server, this.members, this.replies, { ...this.options, refuse: (w, code, message) => this.refuse(w, code, message) });
  }

  /** Refuses `w` for good (its ring inbox is unreachable): it is told why, then declared gone. */
  private refuse(w: WorkerRecord, code: ErrorCode, message: string): void {
    void this.server.send(w.peer, { type: 'reject', code, message }).catch(() => undefined);
    this.declareGone(w, `refused (${code})`);
  }

  /**
   * Initial formation: wait for `n` workers, then form the ring and give every replica the same starting state (the
   * recovery machine from `drop`: a worker lost during the first ring set-up is survived too).
   */
  async start(n: number, joinTimeoutMs: number, initial: ReplicaSnapshot, appliedStep: number, position?: TrainingPosition): Promise<void> {
    this.restorePoint = { state: { snapshot: initial, appliedStep }, ...(position ? { position } : {}) };
    await this.waitForWorkers(n, joinTimeoutMs);
    await this.recovery({ cause: 'start', runPhase: 'join' });
  }

  membershipChangePending(): boolean {
    return this.members.admitted.some((w) => w.status === 'admitted') || this.members.active.some((w) => w.leaving || w.status === 'gone');
  }

  /** At a step boundary: admit joiners, release leavers and drop the dead by re-forming the ring. */
  beforeStep(): Promise<RecoveryOutcome> {
    return this.recovery({ cause: 'membership', runPhase: 'join' });
  }

  runStep(plan: StepOrder): Promise<StepResult> {
    return this.rounds.run(plan);
  }

  /** After a recoverable failure during `runPhase` (step, evaluation, checkpoint): the recovery machine from `detect`. */
  recover(failedStep: number, runPhase = 'step'): Promise<RecoveryOutcome> {
    this.abortRing(`${runPhase} ${failedStep} failed`);
    return this.recovery({ cause: 'failure', runPhase, failedStep });
  }

  async snapshot(): Promise<ReplicaSnapshot> {
    const source = this.members.active.find((w) => w.status === 'active');
    if (!source) throw new MnistDdpError('PEER_LOST', 'checkpoint: no live worker to take the state from', { recoverable: this.options.elastic });
    return (await this.transfer.snapshotFrom(source)).snapshot;
  }

  async evaluate(split: EvalSplit, mistakes = 0): Promise<EvaluationCounts> {
    const workers = [...this.members.active];
    for (const w of workers) w.evaluating = true;
    try {
      return await evaluateOnWorkers(this.server, this.replies, workers, { requestId: ++this.requestIds, split, mistakes, timeoutMs: this.options.requestTimeoutMs * 4 });
    } finally {
      for (const w of workers) w.evaluating = false;
    }
  }

  async close(reason = 'training finished'): Promise<void> {
    this.liveness.stop();
    this.replies.abortAll(new MnistDdpError('GROUP_CLOSED', `the coordinator closed the group: ${reason}`));
    await Promise.all(this.members.all.filter((w) => w.status !== 'gone').map((w) => this.server.send(w.peer, { type: 'stop', reason }).catch(() => undefined)));
    this.server.close();
    await this.options.onClosed?.();
  }
}
