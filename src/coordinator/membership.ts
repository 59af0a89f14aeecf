import type { NarrowWorkerMessage } from '../shared/wire/control-messages.js';

export type WorkerStatus = 'welcomed' | 'admitted' | 'active' | 'gone';

export interface WorkerRecord {
  id: number;
  /** ZeroMQ routing id (hex) of the worker's DEALER. */
  peer: string;
  host: string;
  pid: number;
  instance: number;
  metricsPort: number;
  /** The public key of the worker's ring sockets (CURVE runs): what its ring neighbours admit. */
  ringKey: string | undefined;
  /** The local address of its route to the coordinator (hello `via`): the same value means the same host. */
  via: string | undefined;
  /** The interface its /metrics listens on, as it said at hello (undefined: it did not say). */
  metricsHost: string | undefined;
  /** What it trains on, as it said at hello (backend.ts deviceLabel); undefined when it did not say. */
  device: string | undefined;
  status: WorkerStatus;
  /** Rank in the current generation's ring, -1 outside it. */
  rank: number;
  leaving: boolean;
  lastSeen: number;
  /** Working on an evaluation request: its event loop may be busy for a while, so a dropped connection alone does not shorten its silence limit. */
  evaluating?: boolean;
  /** When it was declared gone (epoch ms): with lastSeen, how long detection took. */
  goneAt?: number;
}

/**
 * Who is in the run. Workers are admitted after a successful join and become active when a ring that includes them
 * forms; each formation is a new generation. Ranks follow worker ids, so survivors keep their relative order.
 */
export class Membership {
  private readonly records: WorkerRecord[] = [];
  private nextId = 0;
  generation = 0;
  active: WorkerRecord[] = [];

  add(peer: string, hello: NarrowWorkerMessage<'hello'>): WorkerRecord {
    const record: WorkerRecord = {
      id: this.nextId++, peer, host: hello.host, pid: hello.pid, instance: hello.instance, metricsPort: hello.metricsPort, ringKey: hello.ringKey, via: hello.via, metricsHost: hello.metricsHost, device: hello.device,
      status: 'welcomed', rank: -1, leaving: false, lastSeen: Date.now(),
    };
    this.records.push(record);
    return record;
  }

  byPeer(peer: string): WorkerRecord | undefined {
    return this.records.find((r) => r.peer === peer && r.status !== 'gone');
  }

  get all(): readonly WorkerRecord[] {
    return this.records;
  }

  /** Admitted or active, and not on the way out. */
  get admitted(): WorkerRecord[] {
    return this.records.filter((r) => (r.status === 'admitted' || r.status === 'active') && !r.leaving);
  }

  /** Starts a generation: assigns ranks over admitted workers (in id order); returns them. */
  beginGeneration(): WorkerRecord[] {
    this.generation++;
    for (const r of this.records) r.rank = -1;
    const members = this.admitted.sort((a, b) => a.id - b.id);
    members.forEach((r, i) => (r.rank = i));
    return members;
  }

  activate(members: WorkerRecord[]): void {
    for (const r of members) r.status = 'active';
    this.active = members;
  }
}
