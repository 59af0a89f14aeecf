import { MnistDdpError } from '../shared/core/errors.js';
import type { Logger } from '../shared/core/log.js';
import { describeLayout, type ParamLayout } from '../shared/model/layout.js';
import { PROTOCOL_VERSION, type NarrowWorkerMessage, type WorkerMessage } from '../shared/wire/control-messages.js';
import type { ControlServer } from './control-server.js';
import type { Membership, WorkerRecord } from './membership.js';

export interface AdmissionSettings {
  /** The run's config, sent to every worker in `welcome`. */
  config: Record<string, unknown>;
  /** What every worker must have built from that config: the model's name and parameter layout. */
  model: string;
  layout: ParamLayout;
  log: Logger;
  /** CURVE run: every worker must bring a ring key (its ring sockets are CURVE too). */
  curve?: boolean;
  /** Called whenever a worker is admitted (recovery waiting for joiners wakes on it). */
  onAdmitted?: () => void;
  /** The coordinator's heartbeat timeout: told to workers in welcome, and every heartbeat is answered (issue #16). */
  heartbeatTimeoutMs?: number;
}

/**
 * Who may take part: hello → welcome (the run's config) → join (what the worker built) → admitted, or a reject
 * naming both sides of a protocol or layout mismatch; `leave` marks a worker for release at the next step boundary.
 * Admitted workers enter the ring when it next forms (ring-formation.ts).
 */
export class Admission {
  private readonly admittedListeners = new Set<() => void>();

  constructor(private readonly server: ControlServer, private readonly members: Membership, private readonly settings: AdmissionSettings) {}

  /** Handles a membership message (hello, join, leave, heartbeat) from `peer`; false for every other type. */
  handle(peer: string, worker: WorkerRecord | undefined, m: WorkerMessage): boolean {
    switch (m.type) {
      case 'hello':
        this.hello(peer, m);
        return true;
      case 'join':
        this.join(peer, worker, m);
        return true;
      case 'leave':
        if (m.rank !== undefined) {
          this.evict(worker, m.rank, m.reason);
        } else if (worker && worker.status !== 'gone') {
          worker.leaving = true;
          this.settings.log.info({ worker: worker.id, rank: worker.rank, reason: m.reason }, 'worker is leaving; the ring re-forms at the next step boundary');
        }
        return true;
      case 'heartbeat':
        // Every message refreshes lastSeen (the group's dispatch); the answer tells the worker it is still heard.
        if (this.settings.heartbeatTimeoutMs !== undefined) void this.server.send(peer, { type: 'heartbeat-ack' }).catch(() => undefined);
        return true;
      default:
        return false;
    }
  }

  /**
   * --on-anomaly evict: a ring member names another rank of the current ring for anomalous gradients (every member
   * reaches the same verdict from the same reduced buffer); it is released like a leaver at the next step boundary.
   * Honoured only in a run configured for eviction, and only from an active member.
   */
  private evict(reporter: WorkerRecord | undefined, rank: number, reason: string): void {
    const target = this.members.active.find((w) => w.rank === rank && w.status === 'active');
    if (this.settings.config.onAnomaly !== 'evict' || reporter?.status !== 'active' || !target || target.leaving) return;
    target.leaving = true;
    this.settings.log.warn({ worker: target.id, rank, reportedBy: reporter.rank, reason }, `evicting rank ${rank} (worker ${target.id}, ${target.host}): ${reason}; the ring re-forms without it at the next step boundary`);
  }

  private hello(peer: string, m: NarrowWorkerMessage<'hello'>): void {
    const { log, config } = this.settings;
    if (m.protocolVersion !== PROTOCOL_VERSION) {
      void this.server.send(peer, { type: 'reject', code: 'HANDSHAKE_MISMATCH', message: `worker speaks protocol v${m.protocolVersion}, the coordinator v${PROTOCOL_VERSION}; run the same mnist-ddp version on both` });
      log.error({ peer, host: m.host, pid: m.pid }, `rejected worker: protocol v${m.protocolVersion} != v${PROTOCOL_VERSION}`);
      return;
    }
    if (this.settings.curve && !m.ringKey) {
      void this.server.send(peer, { type: 'reject', code: 'HANDSHAKE_MISMATCH', message: 'this coordinator runs CURVE and the worker sent no ring key; run the same mnist-ddp version on both' });
      log.error({ peer, host: m.host, pid: m.pid }, 'rejected worker: no ring key in a CURVE run');
      return;
    }
    const record = this.members.add(peer, m);
    log.info({ worker: record.id, host: m.host, pid: m.pid, instance: m.instance }, 'worker said hello');
    const { heartbeatTimeoutMs } = this.settings;
    void this.server.send(peer, { type: 'welcome', protocolVersion: PROTOCOL_VERSION, workerId: record.id, config, ...(heartbeatTimeoutMs !== undefined ? { heartbeatTimeoutMs } : {}) });
  }

  private join(peer: string, worker: WorkerRecord | undefined, m: NarrowWorkerMessage<'join'>): void {
    const { log, model, layout } = this.settings;
    if (!worker || worker.id !== m.workerId || worker.status !== 'welcomed') {
      this.server.reject('unexpected', peer, `join for worker ${m.workerId} without a matching hello`);
      return;
    }
    if (m.model !== model || m.layoutChecksum !== layout.checksum) {
      const message = `worker ${worker.id} (${worker.host} pid ${worker.pid}) built model '${m.model}' with layout ${m.layoutChecksum} [${m.shapes.join(', ')}]; ` +
        `the coordinator has '${model}' with layout ${layout.checksum} [${describeLayout(layout).join(', ')}]`;
      worker.status = 'gone';
      log.error({ worker: worker.id }, `rejected worker: ${message}`);
      void this.server.send(peer, { type: 'reject', code: 'HANDSHAKE_MISMATCH', message });
      return;
    }
    worker.status = 'admitted';
    log.info({ worker: worker.id, host: worker.host }, 'worker admitted');
    void this.server.send(peer, { type: 'admitted', workerId: worker.id });
    for (const listener of this.admittedListeners) listener();
    this.settings.onAdmitted?.();
  }

  /** Resolves once `n` workers have been admitted; fails at the deadline saying how many came. */
  waitForWorkers(n: number, timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = (): void => {
        if (this.members.admitted.length < n) return;
        clearTimeout(timer);
        this.admittedListeners.delete(check);
        resolve();
      };
      const timer = setTimeout(() => {
        this.admittedListeners.delete(check);
        reject(new MnistDdpError('PEER_TIMEOUT', `only ${this.members.admitted.length} of ${n} workers joined within ${timeoutMs} ms; start workers with 'mnist-ddp worker --coordinator ${this.server.endpoint}'`,
          { joined: this.members.admitted.length, expected: n }));
      }, timeoutMs);
      this.admittedListeners.add(check);
      check();
    });
  }
}
