import * as zmq from 'zeromq';
import { encode } from '../shared/wire/codec.js';
import { coordinatorToWorker, parseControl, type CoordinatorMessage, type WorkerMessage } from '../shared/wire/control-messages.js';
import { MnistDdpError } from '../shared/core/errors.js';
import type { Logger } from '../shared/core/log.js';
import { SerialSender } from '../shared/wire/sender.js';
import { curveClientOptions, type WorkerSecurity } from '../shared/security/transport.js';

/** Long enough for a SYN and its answer over any LAN or WAN link this trainer is usable on. */
const CONNECT_TIMEOUT_MS = 2000;

/** How the control connection is secured and bounded (issue #15). */
export interface ControlClientTransport {
  security: WorkerSecurity;
  /** Inbound frame limit (frame-limits.ts WORKER_CONTROL_FRAME_LIMIT). */
  maxMessageSize: number;
}

/**
 * A worker's DEALER connection to the coordinator. Inbound frames are validated; malformed ones are counted and
 * dropped. `next` waits for the next message with a deadline, so a silent coordinator never hangs a worker.
 */
export class ControlClient {
  rejected = 0;
  /** Counts fresh connections (reconnect): a hello sent on an earlier one may have been lost with it. */
  connection = 0;
  private readonly queue: CoordinatorMessage[] = [];
  private wake: (() => void) | undefined;
  private readonly sender: SerialSender<Buffer>;
  private closed = false;
  private onAbort: ((m: Extract<CoordinatorMessage, { type: 'abort' }>) => void) | undefined;
  /** Set when the coordinator refused this worker's handshake: `next` fails with it instead of waiting. */
  private refused: MnistDdpError | undefined;
  private dealer: zmq.Dealer;
  /** When anything last arrived from the coordinator (epoch ms). */
  private lastHeard = Date.now();
  private watchdog: NodeJS.Timeout | undefined;

  private constructor(private readonly newDealer: () => zmq.Dealer, readonly coordinator: string, private readonly log: Logger) {
    this.sender = new SerialSender((frame) => this.dealer.send(frame));
    this.dealer = this.open();
  }

  /** With CURVE security the DEALER is a CURVE client that accepts only the coordinator holding the pinned key. */
  static connect(coordinator: string, log: Logger, transport?: ControlClientTransport): ControlClient {
    const security = transport?.security.mode === 'curve' ? curveClientOptions(transport.security.keys.client, transport.security.keys.serverKey) : {};
    const limit = transport ? { maxMessageSize: transport.maxMessageSize } : {};
    // A connect attempt that gets no answer is dropped after CONNECT_TIMEOUT_MS and made again (ZeroMQ retries every
    // 100 ms): once a cut-off link returns, the worker is back within seconds, not after SYN backoff (issue #16).
    return new ControlClient(() => new zmq.Dealer({ linger: 0, sendHighWaterMark: 10_000, receiveHighWaterMark: 10_000, connectTimeout: CONNECT_TIMEOUT_MS, ...limit, ...security }), coordinator, log);
  }

  private open(): zmq.Dealer {
    const dealer = this.newDealer();
    const refused = (detail: string): void => {
      if (this.refused) return;
      this.refused = new MnistDdpError('AUTH_REFUSED', `the coordinator at ${this.coordinator} refused this worker's handshake (${detail}); ` +
        `check that --keys (MNIST_DDP_KEYS) holds this cluster's coordinator.pub and a worker key on the coordinator's allowed/ list, or that both sides run without keys`, { coordinator: this.coordinator, detail });
      this.wake?.();
    };
    dealer.events.on('handshake:error:auth', (e) => refused(`ZAP status ${e.error.status ?? '?'}`));
    dealer.events.on('handshake:error:protocol', (e) => refused(e.error.code ?? e.error.message));
    dealer.connect(this.coordinator);
    void this.receiveLoop(dealer);
    return dealer;
  }

  /**
   * Expects to hear from the coordinator (it answers every heartbeat) at least every `silenceMs`; past that this
   * worker takes itself for cut off and dropped, and dials a fresh connection (issue #16). The old one may be stuck
   * in TCP's retransmission backoff for minutes after the link returns, so the worker would rejoin only when it runs
   * out; a fresh connect is retried every few seconds and succeeds as soon as the link is back. The message loop
   * then gets a hello-again, as from a coordinator that no longer knows it, and rejoins.
   */
  watchCoordinator(silenceMs: number): void {
    clearInterval(this.watchdog);
    this.lastHeard = Date.now();
    this.watchdog = setInterval(() => {
      const silent = Date.now() - this.lastHeard;
      if (silent > silenceMs) this.reconnect(`nothing from the coordinator at ${this.coordinator} for ${silent} ms`);
    }, Math.min(1000, silenceMs / 4));
    this.watchdog.unref();
  }

  private reconnect(reason: string): void {
    if (this.closed) return;
    this.log.warn({ coordinator: this.coordinator, reason }, `${reason}: reconnecting and saying hello again`);
    const old = this.dealer;
    this.connection++;
    this.lastHeard = Date.now();
    this.dealer = this.open();
    old.close();
    this.onAbort?.({ type: 'abort', generation: Number.MAX_SAFE_INTEGER, reason });
    // Whatever is still queued came over the old connection for a membership the coordinator has dropped.
    this.queue.length = 0;
    this.queue.push({ type: 'hello-again', reason });
    this.wake?.();
  }

  /**
   * `abort` (a generation is over) is handled as it arrives, not queued: the worker's message loop may be blocked
   * in the very all-reduce the abort must end (issue #14).
   */
  onGenerationAbort(handler: (m: Extract<CoordinatorMessage, { type: 'abort' }>) => void): void {
    this.onAbort = handler;
  }

  send(message: WorkerMessage): Promise<void> {
    return this.sender.send(encode(message));
  }

  async next(timeoutMs: number): Promise<CoordinatorMessage> {
    const deadline = Date.now() + timeoutMs;
    while (this.queue.length === 0) {
      if (this.refused) throw this.refused;
      if (this.closed) throw new MnistDdpError('PEER_LOST', 'control connection closed', {});
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new MnistDdpError('PEER_TIMEOUT', `no message from the coordinator at ${this.coordinator} for ${timeoutMs} ms; is it running and reachable?`, { coordinator: this.coordinator });
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = undefined;
    }
    return this.queue.shift()!;
  }

  private async receiveLoop(dealer: zmq.Dealer): Promise<void> {
    try {
      for await (const frames of dealer) {
        this.lastHeard = Date.now();
        const parsed = parseControl(coordinatorToWorker, frames[frames.length - 1]);
        if (!parsed.ok) {
          this.rejected++;
          this.log.warn({ problem: parsed.problem }, `rejected a control frame: ${parsed.problem}`);
          continue;
        }
        if (parsed.message.type === 'abort') {
          this.onAbort?.(parsed.message);
          continue;
        }
        if (parsed.message.type === 'heartbeat-ack') continue;
        // hello-again ends whatever the worker waits in as well (it is no member of any ring any more), then queues.
        if (parsed.message.type === 'hello-again') this.onAbort?.({ type: 'abort', generation: Number.MAX_SAFE_INTEGER, reason: parsed.message.reason });
        this.queue.push(parsed.message);
        this.wake?.();
      }
    } catch (err) {
      if (!this.closed && dealer === this.dealer) this.log.error({ err: (err as Error).message }, 'control connection failed');
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.watchdog);
    this.dealer.close();
    this.wake?.();
  }
}
