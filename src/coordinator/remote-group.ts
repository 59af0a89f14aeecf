import { NUM_CLASSES } from '../shared/data/mnist.js';
import { PROTOCOL_VERSION, type CoordinatorMessage, type NarrowWorkerMessage, type WorkerMessage } from '../shared/wire/control-messages.js';
import { isErrorCode, MnistDdpError, type ErrorCode } from '../shared/core/errors.js';
import { addConfusion } from '../shared/train/evaluation.js';
import type { Logger } from '../shared/core/log.js';
import { describeLayout, type ParamLayout } from '../shared/model/layout.js';
import type { EvaluationCounts, Mistake } from '../shared/train/replica.js';
import type { EvalSplit, ReplicaSnapshot, StepReport } from '../shared/train/worker-core.js';
import type { ControlServer } from './control-server.js';
import type { StepOrder, StepResult, WorkerGroup } from './driver.js';
import { Membership, type WorkerRecord } from './membership.js';

export interface RemoteGroupOptions {
  /** The run's config, sent to every worker in `welcome`. */
  config: Record<string, unknown>;
  model: string;
  layout: ParamLayout;
  /** Deadline for a reply to any request (join, ring formation, evaluation, snapshot). */
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
  onMembershipChange?: (active: readonly WorkerRecord[], generation: number) => void;
  /**
   * Awaited at the end of close(), once the workers were told to stop and the socket is closed: the owner's own
   * clean-up (startLocalWorkerGroup waits for its worker processes here).
   */
  onClosed?: () => Promise<void>;
}

interface CollectOptions {
  /** A step's failure: the worker-errors this wait claims (others fall through to the next waiter). */
  matchError?: (m: NarrowWorkerMessage<'worker-error'>) => boolean;
  /**
   * Start the deadline (and the stall warning) only once this settles. A step order queued behind another one is
   * timed from when the workers can start it, not from when it was queued.
   */
  armAfter?: Promise<unknown>;
}

interface Waiter {
  accept(peer: string, message: WorkerMessage): boolean;
  /** Settles the wait with `err` (the group is closing). */
  abort(err: Error): void;
}

/**
 * The coordinator's side of distributed training: membership (hello → welcome → join → admitted), ring formation
 * per generation (open-inbox → inbox → ring → ring-ready), step orders with deadlines, exact-count evaluation,
 * state transfer, replica digests, and elastic re-forming at step boundaries.
 */
export class RemoteWorkerGroup implements WorkerGroup {
  private readonly members = new Membership();
  private readonly waiters = new Set<Waiter>();
  private requestIds = 0;
  private admittedListeners: Array<() => void> = [];
  /** Settles when the last ordered step has (the next order's deadline starts then). */
  private previousStep: Promise<unknown> | undefined;
  /** Highest step number ordered so far: replies about steps up to it that nobody waits for are late, not unexpected. */
  private highestOrdered = -1;

  constructor(private readonly server: ControlServer, private readonly o: RemoteGroupOptions) {
    server.onMessage((peer, message) => this.dispatch(peer, message));
  }

  /** Two step orders in flight: every worker has its next order queued before it finishes the current step. */
  readonly pipelineDepth = 2;

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
    switch (m.type) {
      case 'hello': {
        if (m.protocolVersion !== PROTOCOL_VERSION) {
          void this.server.send(peer, { type: 'reject', code: 'HANDSHAKE_MISMATCH', message: `worker speaks protocol v${m.protocolVersion}, the coordinator v${PROTOCOL_VERSION}; run the same mnist-ddp version on both` });
          this.o.log.error({ peer, host: m.host, pid: m.pid }, `rejected worker: protocol v${m.protocolVersion} != v${PROTOCOL_VERSION}`);
          return;
        }
        const record = this.members.add(peer, m);
        this.o.log.info({ worker: record.id, host: m.host, pid: m.pid, instance: m.instance }, 'worker said hello');
        void this.server.send(peer, { type: 'welcome', protocolVersion: PROTOCOL_VERSION, workerId: record.id, config: this.o.config });
        return;
      }
      case 'join': {
        if (!worker || worker.id !== m.workerId || worker.status !== 'welcomed') {
          this.server.reject('unexpected', peer, `join for worker ${m.workerId} without a matching hello`);
          return;
        }
        const ours = describeLayout(this.o.layout);
        if (m.model !== this.o.model || m.layoutChecksum !== this.o.layout.checksum) {
          const message = `worker ${worker.id} (${worker.host} pid ${worker.pid}) built model '${m.model}' with layout ${m.layoutChecksum} [${m.shapes.join(', ')}]; ` +
            `the coordinator has '${this.o.model}' with layout ${this.o.layout.checksum} [${ours.join(', ')}]`;
          worker.status = 'gone';
          this.o.log.error({ worker: worker.id }, `rejected worker: ${message}`);
          void this.server.send(peer, { type: 'reject', code: 'HANDSHAKE_MISMATCH', message });
          return;
        }
        worker.status = 'admitted';
        this.o.log.info({ worker: worker.id, host: worker.host }, 'worker admitted');
        void this.server.send(peer, { type: 'admitted', workerId: worker.id });
        for (const listener of this.admittedListeners) listener();
        return;
      }
      case 'leave':
        if (worker && worker.status !== 'gone') {
          worker.leaving = true;
          this.o.log.info({ worker: worker.id, rank: worker.rank, reason: m.reason }, 'worker is leaving; the ring re-forms at the next step boundary');
        }
        return;
      case 'heartbeat':
        return;
      default:
        for (const waiter of this.waiters) if (waiter.accept(peer, m)) return;
        if ((m.type === 'worker-error' || m.type === 'step-done') && worker && m.generation <= this.generation && m.step <= this.highestOrdered) {
          // Reports about a step that already failed (another rank's, or of the order queued behind it): nothing
          // waits for them any more. Anything about a step never ordered is rejected below.
          this.o.log.info({ worker: worker.id, step: m.step, generation: m.generation, ...(m.type === 'worker-error' ? { code: m.code } : {}) },
            `late report from rank ${worker.rank}: step ${m.step} ${m.type === 'worker-error' ? m.code : 'done'}`);
          return;
        }
        this.server.reject('unexpected', peer, `${m.type} from ${worker ? `worker ${worker.id}` : 'an unknown peer'} matches no pending request`);
    }
  }

  /**
   * Waits for one `type` reply from each of `workers`. A worker-error from one of them that `matchError` claims (a
   * step's failure) fails fast; silence fails at the deadline, naming the missing ranks, after a warning at half of
   * it (the stall inspector).
   */
  private collect<K extends WorkerMessage['type']>(
    type: K, workers: readonly WorkerRecord[], timeoutMs: number, what: string, match: (m: NarrowWorkerMessage<K>) => boolean = () => true,
    options: CollectOptions = {},
  ): Promise<Map<number, NarrowWorkerMessage<K>>> {
    const matchError = options.matchError ?? (() => false);
    return new Promise((resolve, reject) => {
      const got = new Map<number, NarrowWorkerMessage<K>>();
      const pending = (): WorkerRecord[] => workers.filter((w) => !got.has(w.id));
      const names = (ws: WorkerRecord[]): string => ws.map((w) => `rank ${w.rank} (worker ${w.id}, ${w.host} pid ${w.pid})`).join(', ');
      let warn: NodeJS.Timeout | undefined;
      let fail: NodeJS.Timeout | undefined;
      let settled = false;
      const finish = (err?: Error): void => {
        settled = true;
        clearTimeout(warn);
        clearTimeout(fail);
        this.waiters.delete(waiter);
        if (err) reject(err);
        else resolve(got);
      };
      const waiter: Waiter = {
        accept: (peer, m) => {
          const w = workers.find((x) => x.peer === peer);
          if (!w) return false;
          if (m.type === 'worker-error') {
            if (!matchError(m)) return false;
            const code: ErrorCode = m.code === 'PEER_TIMEOUT' || m.code === 'PEER_LOST' ? 'PEER_LOST' : isErrorCode(m.code) ? m.code : 'FRAME_UNEXPECTED';
            finish(new MnistDdpError(code,
              `${what}: rank ${w.rank} reported ${m.code}: ${m.message}`,
              { rank: w.rank, workerCode: m.code, missingRanks: m.missingRank !== undefined ? [m.missingRank] : [], recoverable: this.o.elastic && code === 'PEER_LOST' }));
            return true;
          }
          if (m.type !== type || got.has(w.id) || !match(m as NarrowWorkerMessage<K>)) return false;
          got.set(w.id, m as NarrowWorkerMessage<K>);
          if (pending().length === 0) finish();
          return true;
        },
        abort: (err) => finish(err),
      };
      /** Starts the deadline; a wait that already settled (or a closed group) has none to start. */
      const arm = (): void => {
        if (settled) return;
        warn = setTimeout(() => this.o.log.warn({ missing: pending().map((w) => w.rank) }, `${what}: still waiting after ${timeoutMs / 2} ms for ${names(pending())}`), timeoutMs / 2);
        fail = setTimeout(() => {
          const missing = pending();
          finish(new MnistDdpError('PEER_TIMEOUT', `${what}: no reply within ${timeoutMs} ms from ${names(missing)}`,
            { missingRanks: missing.map((w) => w.rank), recoverable: this.o.elastic }));
        }, timeoutMs);
      };
      this.waiters.add(waiter);
      if (workers.length === 0) finish();
      else if (options.armAfter) void options.armAfter.then(arm, arm);
      else arm();
    });
  }

  /** Resolves once `n` workers have been admitted; fails at the deadline saying how many came. */
  waitForWorkers(n: number, timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = (): boolean => {
        if (this.members.admitted.length < n) return false;
        clearTimeout(timer);
        this.admittedListeners = this.admittedListeners.filter((l) => l !== listener);
        resolve();
        return true;
      };
      const listener = (): void => void check();
      const timer = setTimeout(() => {
        this.admittedListeners = this.admittedListeners.filter((l) => l !== listener);
        reject(new MnistDdpError('PEER_TIMEOUT', `only ${this.members.admitted.length} of ${n} workers joined within ${timeoutMs} ms; start workers with 'mnist-ddp worker --coordinator ${this.server.endpoint}'`, { joined: this.members.admitted.length, expected: n }));
      }, timeoutMs);
      this.admittedListeners.push(listener);
      check();
    });
  }

  /** New generation: ranks by worker id over admitted workers that are not leaving; ring set up and confirmed. */
  private async formRing(): Promise<void> {
    const members = this.members.beginGeneration();
    const generation = this.members.generation;
    if (members.length === 0) throw new MnistDdpError('PEER_LOST', `generation ${generation}: no workers left to train with`, {});
    const inboxReplies = this.collect('inbox', members, this.o.requestTimeoutMs, `generation ${generation} ring set-up`, (m) => m.generation === generation);
    await this.broadcast(members, () => ({ type: 'open-inbox', generation }), inboxReplies);
    const inboxes = await inboxReplies;
    const peers = members.map((w) => inboxes.get(w.id)!.endpoint);
    const ready = this.collect('ring-ready', members, this.o.requestTimeoutMs, `generation ${generation} ring barrier`, (m) => m.generation === generation);
    await this.broadcast(members, (w) => ({ type: 'ring', generation, rank: w.rank, worldSize: members.length, peers }), ready);
    await ready;
    this.members.activate(members);
    this.o.log.info({ generation, workers: members.map((w) => ({ rank: w.rank, worker: w.id, host: w.host })), peers }, `ring formed: ${members.length} worker(s), generation ${generation}`);
    this.o.onMembershipChange?.(members, generation);
  }

  /**
   * Sends one message per worker. Callers register the reply collector first and pass it here, so a reply can never
   * arrive before anyone waits for it; a failed send settles that collector's rejection handling.
   */
  private async broadcast(workers: readonly WorkerRecord[], message: (w: WorkerRecord) => CoordinatorMessage, replies?: Promise<unknown>): Promise<void> {
    replies?.catch(() => undefined);
    await Promise.all(workers.map((w) => this.server.send(w.peer, message(w))));
  }

  private async loadState(workers: readonly WorkerRecord[], s: ReplicaSnapshot, appliedStep: number): Promise<void> {
    await Promise.all(workers.map((w) => this.server.send(w.peer, {
      type: 'load-state', generation: this.generation, appliedStep, weights: s.weights,
      optimizerName: s.optimizer.name, optimizerStep: s.optimizer.step, slots: s.optimizer.slots,
    })));
  }

  /** Initial formation: wait for `n` workers, form the ring, give every replica the same starting state. */
  async start(n: number, joinTimeoutMs: number, initial: ReplicaSnapshot, appliedStep: number): Promise<void> {
    await this.waitForWorkers(n, joinTimeoutMs);
    await this.formRing();
    await this.loadState(this.members.active, initial, appliedStep);
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
    const state = joiners.length > 0 && source ? await this.snapshotFrom(source) : undefined;
    for (const w of leavers) {
      w.status = 'gone';
      void this.server.send(w.peer, { type: 'stop', reason: 'left the ring' });
    }
    await this.formRing();
    if (state) await this.loadState(this.members.active.filter((w) => joiners.includes(w)), state.snapshot, state.appliedStep);
  }

  async runStep(plan: StepOrder): Promise<StepResult> {
    const generation = this.generation;
    const workers = [...this.members.active];
    const digest = this.o.digestEvery > 0 && plan.step % this.o.digestEvery === 0;
    const done = this.collect('step-done', workers, this.o.stepTimeoutMs, `step ${plan.step}`, (m) => m.generation === generation && m.step === plan.step, {
      matchError: (e) => e.generation === generation && e.step === plan.step,
      armAfter: this.previousStep,
    });
    this.previousStep = done.catch(() => undefined);
    this.highestOrdered = Math.max(this.highestOrdered, plan.step);
    await this.broadcast(workers, () => ({ type: 'step', generation, ...plan, digest }), done);
    const replies = await done;
    const reports: StepReport[] = workers.map((w) => {
      const r = replies.get(w.id)!;
      return { rank: r.rank, loss: r.loss, globalCount: r.globalCount, localCount: r.localCount, computeMs: r.computeMs, allReduceMs: r.allReduceMs, applyMs: r.applyMs };
    });
    const localTotal = reports.reduce((a, r) => a + r.localCount, 0);
    if (localTotal !== plan.count || reports.some((r) => r.globalCount !== plan.count)) {
      throw new MnistDdpError('FRAME_UNEXPECTED', `step ${plan.step}: ranks processed ${localTotal} samples (global counts ${reports.map((r) => r.globalCount).join('/')}), expected ${plan.count}`, { step: plan.step });
    }
    if (digest) this.checkDigests(plan.step, workers, replies);
    return { loss: reports[0]!.loss, reports };
  }

  private checkDigests(step: number, workers: WorkerRecord[], replies: Map<number, NarrowWorkerMessage<'step-done'>>): void {
    const digests = workers.map((w) => ({ rank: w.rank, digest: replies.get(w.id)!.digest }));
    if (new Set(digests.map((d) => d.digest)).size !== 1) {
      throw new MnistDdpError('REPLICA_DIVERGED', `after step ${step} the replicas differ: ${digests.map((d) => `rank ${d.rank} ${d.digest}`).join(', ')}; stopping (check that every worker runs the same backend and mnist-ddp version)`, { step, digests });
    }
  }

  /**
   * After a failed step in an elastic run: drop the workers that went silent, take the state of the survivor that
   * has applied the fewest steps (normally not the failed one; if every survivor applied it, the driver commits it
   * instead of redoing it), re-form, load that state everywhere and return the last step it has applied.
   */
  async recover(failedStep: number): Promise<number> {
    const deadline = Date.now() + this.o.heartbeatTimeoutMs;
    while (Date.now() < deadline) {
      if (this.members.active.some((w) => Date.now() - w.lastSeen > this.o.heartbeatTimeoutMs / 2)) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    for (const w of this.members.active) {
      if (w.leaving || Date.now() - w.lastSeen > this.o.heartbeatTimeoutMs / 2) {
        w.status = 'gone';
        this.o.log.warn({ worker: w.id, rank: w.rank }, `rank ${w.rank} (worker ${w.id}) is gone`);
      }
    }
    const survivors = this.members.active.filter((w) => w.status === 'active');
    const snapshots = await Promise.all(survivors.map((w) => this.snapshotFrom(w)));
    const base = snapshots.reduce((a, b) => (b.appliedStep < a.appliedStep ? b : a));
    this.o.log.warn({ failedStep, survivors: survivors.length, restartFrom: base.appliedStep }, `recovering step ${failedStep} with ${survivors.length} worker(s)`);
    await this.formRing();
    await this.loadState(this.members.active, base.snapshot, base.appliedStep);
    return base.appliedStep;
  }

  private async snapshotFrom(w: WorkerRecord): Promise<{ snapshot: ReplicaSnapshot; appliedStep: number }> {
    const requestId = ++this.requestIds;
    const replies = this.collect('snapshot', [w], this.o.requestTimeoutMs, `snapshot from rank ${w.rank}`, (m) => m.requestId === requestId);
    await this.broadcast([w], () => ({ type: 'snapshot-request', requestId }), replies);
    const reply = (await replies).get(w.id)!;
    return {
      appliedStep: reply.appliedStep,
      snapshot: { weights: reply.weights, optimizer: { name: reply.optimizerName, step: reply.optimizerStep, slots: reply.slots } },
    };
  }

  async snapshot(): Promise<ReplicaSnapshot> {
    return (await this.snapshotFrom(this.members.active[0]!)).snapshot;
  }

  async evaluate(split: EvalSplit, mistakes = 0): Promise<EvaluationCounts> {
    const requestId = ++this.requestIds;
    const workers = [...this.members.active];
    const pending = this.collect('evaluation', workers, this.o.requestTimeoutMs * 4, `${split} evaluation`, (m) => m.requestId === requestId);
    await this.broadcast(workers, () => ({ type: 'evaluate', requestId, split, mistakes }), pending);
    const replies = await pending;
    const confusion = new Int32Array(NUM_CLASSES * NUM_CLASSES);
    let lossSum = 0;
    let count = 0;
    const all: Mistake[] = [];
    for (const r of replies.values()) {
      addConfusion(confusion, r.confusion);
      lossSum += r.lossSum;
      count += r.count;
      all.push(...r.mistakes);
    }
    all.sort((a, b) => b.confidence - a.confidence);
    return { confusion, lossSum, count, mistakes: all.slice(0, mistakes) };
  }

  async close(reason = 'training finished'): Promise<void> {
    // Orders still in flight (a failed run leaves the next step's order pending) end here, not at their deadlines.
    for (const waiter of [...this.waiters]) waiter.abort(new MnistDdpError('GROUP_CLOSED', `the coordinator closed the group: ${reason}`));
    await Promise.all(this.members.all.filter((w) => w.status !== 'gone').map((w) => this.server.send(w.peer, { type: 'stop', reason }).catch(() => undefined)));
    this.server.close();
    await this.o.onClosed?.();
  }
}
