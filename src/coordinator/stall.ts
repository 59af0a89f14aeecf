import { isErrorCode, MnistDdpError, type ErrorCode } from '../shared/core/errors.js';
import type { Logger } from '../shared/core/log.js';
import type { NarrowWorkerMessage, WorkerMessage } from '../shared/wire/control-messages.js';
import type { WorkerRecord } from './membership.js';

export type WorkerReplies<K extends WorkerMessage['type']> = Map<number, NarrowWorkerMessage<K>>;

export interface CollectOptions<K extends WorkerMessage['type']> {
  /** Only replies this accepts count (the right generation, step or request id); others fall through. */
  match?: (m: NarrowWorkerMessage<K>) => boolean;
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
  /** Fails the wait at once when `worker` is one it still waits for (declared gone): no deadline to run out. */
  lost(worker: WorkerRecord, why: string): void;
}

/** "rank 1 (worker 3, host-b pid 4242), …": how a log line or an error names workers. */
export function describeWorkers(workers: readonly WorkerRecord[]): string {
  return workers.map((w) => `rank ${w.rank} (worker ${w.id}, ${w.host} pid ${w.pid})`).join(', ');
}

/**
 * Every reply the coordinator waits for, with the stall inspector over it: a wait warns at half its deadline and
 * fails at the deadline, naming the ranks still missing. A PEER_TIMEOUT or a lost peer is marked recoverable in an
 * elastic run, so the driver re-forms the ring instead of failing.
 */
export class ReplyCollector {
  private readonly waiters = new Set<Waiter>();

  constructor(private readonly settings: { log: Logger; elastic: boolean }) {}

  /**
   * Waits for one `type` reply from each of `workers`. A worker-error from one of them that `matchError` claims (a
   * step's failure) fails fast; silence fails at the deadline.
   */
  collect<K extends WorkerMessage['type']>(type: K, workers: readonly WorkerRecord[], timeoutMs: number, what: string, options: CollectOptions<K> = {}): Promise<WorkerReplies<K>> {
    const { log, elastic } = this.settings;
    const match = options.match ?? (() => true);
    const matchError = options.matchError ?? (() => false);
    return new Promise((resolve, reject) => {
      const got: WorkerReplies<K> = new Map();
      const pending = (): WorkerRecord[] => workers.filter((w) => !got.has(w.id));
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
              { rank: w.rank, workerCode: m.code, missingRanks: m.missingRank !== undefined ? [m.missingRank] : [], recoverable: elastic && code === 'PEER_LOST' }));
            return true;
          }
          if (m.type !== type || got.has(w.id) || !match(m as NarrowWorkerMessage<K>)) return false;
          got.set(w.id, m as NarrowWorkerMessage<K>);
          if (pending().length === 0) finish();
          return true;
        },
        abort: (err) => finish(err),
        lost: (w, why) => {
          if (settled || !workers.includes(w) || got.has(w.id)) return;
          finish(new MnistDdpError('PEER_LOST', `${what}: rank ${w.rank} (worker ${w.id}, ${w.host} pid ${w.pid}) is gone: ${why}`,
            { rank: w.rank, missingRanks: [w.rank], recoverable: elastic }));
        },
      };
      /** Starts the deadline; a wait that already settled (or a closed group) has none to start. */
      const arm = (): void => {
        if (settled) return;
        warn = setTimeout(() => log.warn({ missing: pending().map((w) => w.rank) }, `${what}: still waiting after ${timeoutMs / 2} ms for ${describeWorkers(pending())}`), timeoutMs / 2);
        fail = setTimeout(() => {
          const missing = pending();
          finish(new MnistDdpError('PEER_TIMEOUT', `${what}: no reply within ${timeoutMs} ms from ${describeWorkers(missing)}`,
            { missingRanks: missing.map((w) => w.rank), recoverable: elastic }));
        }, timeoutMs);
      };
      this.waiters.add(waiter);
      // A worker declared gone before this wait began is as good as lost now (no deadline to run out).
      const gone = workers.find((w) => w.status === 'gone');
      if (gone) waiter.lost(gone, 'declared gone earlier');
      else if (workers.length === 0) finish();
      else if (options.armAfter) void options.armAfter.then(arm, arm);
      else arm();
    });
  }

  /** Hands `message` to the first pending wait that claims it; false when none does. */
  offer(peer: string, message: WorkerMessage): boolean {
    for (const waiter of this.waiters) if (waiter.accept(peer, message)) return true;
    return false;
  }

  /** A worker was declared gone: every wait still expecting a reply from it fails now (PEER_LOST, recoverable if elastic). */
  memberLost(worker: WorkerRecord, why: string): void {
    for (const waiter of [...this.waiters]) waiter.lost(worker, why);
  }

  /** Settles every pending wait with `err`: orders still in flight end now, not at their deadlines. */
  abortAll(err: Error): void {
    for (const waiter of [...this.waiters]) waiter.abort(err);
  }
}
