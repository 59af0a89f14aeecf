import * as zmq from 'zeromq';
import { encode } from '../shared/wire/codec.js';
import { coordinatorToWorker, parseControl, type CoordinatorMessage, type WorkerMessage } from '../shared/wire/control-messages.js';
import { MnistDdpError } from '../shared/core/errors.js';
import type { Logger } from '../shared/core/log.js';
import { SerialSender } from '../shared/wire/sender.js';
import { curveClientOptions, type WorkerSecurity } from '../shared/security/transport.js';

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
  private readonly queue: CoordinatorMessage[] = [];
  private wake: (() => void) | undefined;
  private readonly sender: SerialSender<Buffer>;
  private closed = false;
  private onAbort: ((m: Extract<CoordinatorMessage, { type: 'abort' }>) => void) | undefined;
  /** Set when the coordinator refused this worker's handshake: `next` fails with it instead of waiting. */
  private refused: MnistDdpError | undefined;

  private constructor(private readonly dealer: zmq.Dealer, readonly coordinator: string, private readonly log: Logger) {
    this.sender = new SerialSender((frame) => this.dealer.send(frame));
    void this.receiveLoop();
  }

  /** With CURVE security the DEALER is a CURVE client that accepts only the coordinator holding the pinned key. */
  static connect(coordinator: string, log: Logger, transport?: ControlClientTransport): ControlClient {
    const security = transport?.security.mode === 'curve' ? curveClientOptions(transport.security.keys.client, transport.security.keys.serverKey) : {};
    const limit = transport ? { maxMessageSize: transport.maxMessageSize } : {};
    const dealer = new zmq.Dealer({ linger: 0, sendHighWaterMark: 10_000, receiveHighWaterMark: 10_000, ...limit, ...security });
    const client = new ControlClient(dealer, coordinator, log);
    const refused = (detail: string): void => {
      if (client.refused) return;
      client.refused = new MnistDdpError('AUTH_REFUSED', `the coordinator at ${coordinator} refused this worker's handshake (${detail}); ` +
        `check that --keys (MNIST_DDP_KEYS) holds this cluster's coordinator.pub and a worker key on the coordinator's allowed/ list, or that both sides run without keys`, { coordinator, detail });
      client.wake?.();
    };
    dealer.events.on('handshake:error:auth', (e) => refused(`ZAP status ${e.error.status ?? '?'}`));
    dealer.events.on('handshake:error:protocol', (e) => refused(e.error.code ?? e.error.message));
    dealer.connect(coordinator);
    return client;
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

  private async receiveLoop(): Promise<void> {
    try {
      for await (const frames of this.dealer) {
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
        // hello-again ends whatever the worker waits in as well (it is no member of any ring any more), then queues.
        if (parsed.message.type === 'hello-again') this.onAbort?.({ type: 'abort', generation: Number.MAX_SAFE_INTEGER, reason: parsed.message.reason });
        this.queue.push(parsed.message);
        this.wake?.();
      }
    } catch (err) {
      if (!this.closed) this.log.error({ err: (err as Error).message }, 'control connection failed');
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.dealer.close();
    this.wake?.();
  }
}
