import type { ReplicaSnapshot } from '../shared/wire/control-payloads.js';
import type { ControlServer } from './control-server.js';
import type { WorkerRecord } from './membership.js';
import type { ReplyCollector } from './stall.js';

/** A replica's state and the last step it has applied (-1: none): what a joiner or a recovery starts from. */
export interface RankState {
  snapshot: ReplicaSnapshot;
  appliedStep: number;
}

/**
 * Moving replica state between workers through the coordinator: a snapshot from one worker (snapshot-request →
 * snapshot), and load-state to others. Every replica in a generation starts from the same state this way.
 */
export class StateTransfer {
  constructor(
    private readonly server: ControlServer,
    private readonly replies: ReplyCollector,
    private readonly settings: { requestTimeoutMs: number; nextRequestId: () => number },
  ) {}

  async snapshotFrom(w: WorkerRecord): Promise<RankState> {
    const requestId = this.settings.nextRequestId();
    const replies = this.replies.collect('snapshot', [w], this.settings.requestTimeoutMs, `snapshot from rank ${w.rank}`, { match: (m) => m.requestId === requestId });
    await this.server.broadcast([w], () => ({ type: 'snapshot-request', requestId }), replies);
    const { weights, optimizer, appliedStep } = (await replies).get(w.id)!;
    return { snapshot: { weights, optimizer }, appliedStep };
  }

  /** Sends `state` to `workers` for `generation`; a worker applies it before the next step order. */
  async load(workers: readonly WorkerRecord[], generation: number, { snapshot, appliedStep }: RankState): Promise<void> {
    await this.server.broadcast(workers, () => ({ type: 'load-state', generation, appliedStep, weights: snapshot.weights, optimizer: snapshot.optimizer }));
  }
}
