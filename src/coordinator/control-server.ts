import * as zmq from 'zeromq';
import { encode } from '../shared/wire/codec.js';
import { parseControl, workerToCoordinator, type CoordinatorMessage, type WorkerMessage } from '../shared/wire/control-messages.js';
import type { Logger } from '../shared/core/log.js';
import { SerialSender } from '../shared/wire/sender.js';
import type { RejectReason } from '../shared/wire/reject-reasons.js';
import type { CoordinatorSecurity, TransportObserver } from '../shared/security/transport.js';
import { curveServerOptions, observeTransport, refusalLogger } from '../shared/security/transport.js';
import { registerZapDomain, uniqueZapDomain, type ZapRegistration } from '../shared/security/zap.js';

/** How the control socket is secured and bounded (issue #15). */
export interface ControlTransport {
  security: CoordinatorSecurity;
  /** Inbound frame limit (frame-limits.ts controlFrameLimit); larger frames drop their connection. */
  maxMessageSize: number;
  observer?: TransportObserver;
  /**
   * ZMTP heartbeats (issue #16): the ROUTER pings every worker each second and closes a connection that stays silent
   * this long (when the coordinator declares its worker gone anyway), instead of keeping a dead one, and queueing for
   * it, until TCP gives up after ~15 min. Default: no heartbeats. (A ZMTP TTL would not make the worker's side drop
   * it too: libzmq arms that timer only when a ping is the last thing received; the worker watches for itself.)
   */
  heartbeatTimeoutMs?: number;
}

export type ControlRejectReason = Extract<RejectReason, 'malformed' | 'unexpected'>;

/**
 * The coordinator's ROUTER socket. Every inbound frame is decoded and validated here; a frame that fails is
 * counted and logged, and the loop keeps serving. `peer` is the hex routing id ZeroMQ gives each worker's DEALER.
 */
export class ControlServer {
  readonly rejected: Record<ControlRejectReason, number> = { malformed: 0, unexpected: 0 };
  private readonly sender: SerialSender<[Buffer, Buffer]>;
  private handler: (peer: string, message: WorkerMessage) => void = () => {};
  private closed = false;

  private constructor(
    private readonly router: zmq.Router, readonly endpoint: string, private readonly log: Logger, private readonly onReject?: (reason: ControlRejectReason) => void,
    private readonly zap?: ZapRegistration,
  ) {
    this.sender = new SerialSender((frames) => this.router.send(frames));
    void this.receiveLoop();
  }

  /**
   * Binds the ROUTER. With CURVE security it is a CURVE server whose ZAP policy admits exactly the allow-listed
   * client keys; every other peer is refused at the handshake and never delivers a frame. Without `transport`:
   * plaintext with no frame limit (tests of the protocol itself).
   */
  static async bind(address: string, log: Logger, onReject?: (reason: ControlRejectReason) => void, transport?: ControlTransport): Promise<ControlServer> {
    const security = transport?.security;
    let zap: ZapRegistration | undefined;
    let options: Partial<zmq.SocketOptions<zmq.Router>> = {};
    if (security?.mode === 'curve') {
      const allowed = [...security.keys.allowed.values()];
      zap = await registerZapDomain(uniqueZapDomain('control'), { allows: (key) => allowed.some((k) => k.equals(key)), onRefused: refusalLogger('control socket', log) });
      options = curveServerOptions(security.keys.server, zap.domain);
    }
    const heartbeat = transport?.heartbeatTimeoutMs ? zmtpHeartbeat(transport.heartbeatTimeoutMs) : {};
    const router = new zmq.Router({ linger: 0, mandatory: false, sendHighWaterMark: 10_000, ...(transport ? { maxMessageSize: transport.maxMessageSize } : {}), ...heartbeat, ...options });
    if (transport) observeTransport(router, 'control socket', log, transport.observer ?? {});
    try {
      await router.bind(address);
    } catch (err) {
      router.close();
      await zap?.close();
      throw err;
    }
    return new ControlServer(router, router.lastEndpoint ?? address, log, onReject, zap);
  }

  /** The socket monitor saw a connection drop (a worker process died or its host went away). */
  onDisconnect(listener: () => void): void {
    this.router.events.on('disconnect', listener);
  }

  onMessage(handler: (peer: string, message: WorkerMessage) => void): void {
    this.handler = handler;
  }

  reject(reason: ControlRejectReason, peer: string, problem: string): void {
    this.rejected[reason]++;
    this.onReject?.(reason);
    this.log.warn({ peer, reason, problem }, `rejected a control frame: ${problem}`);
  }

  async send(peer: string, message: CoordinatorMessage): Promise<void> {
    if (this.closed) return;
    await this.sender.send([Buffer.from(peer, 'hex'), encode(message)]);
  }

  /**
   * Sends one message per worker. Callers register the reply wait first and pass it as `replies`, so a reply can
   * never arrive before anyone waits for it; a failed send surfaces here, and the wait's own rejection is handled.
   */
  async broadcast<W extends { peer: string }>(workers: readonly W[], message: (w: W) => CoordinatorMessage, replies?: Promise<unknown>): Promise<void> {
    replies?.catch(() => undefined);
    await Promise.all(workers.map((w) => this.send(w.peer, message(w))));
  }

  private async receiveLoop(): Promise<void> {
    try {
      for await (const frames of this.router) {
        const [id, body] = frames;
        if (!id || !body || frames.length !== 2) {
          this.reject('malformed', id?.toString('hex') ?? '?', `expected [identity, body], got ${frames.length} frame(s)`);
          continue;
        }
        const peer = id.toString('hex');
        const parsed = parseControl(workerToCoordinator, body);
        if (!parsed.ok) {
          this.reject('malformed', peer, parsed.problem);
          continue;
        }
        this.handler(peer, parsed.message);
      }
    } catch (err) {
      if (!this.closed) this.log.error({ err: (err as Error).message }, 'control socket failed');
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.router.close();
    void this.zap?.close();
  }
}

/** A ZMTP ping every second (more often for short timeouts); a connection silent for `timeoutMs` after one is closed. */
function zmtpHeartbeat(timeoutMs: number): Pick<zmq.SocketOptions<zmq.Router>, 'heartbeatInterval' | 'heartbeatTimeout'> {
  return { heartbeatInterval: Math.min(1000, Math.floor(timeoutMs / 2)), heartbeatTimeout: timeoutMs };
}
