import * as zmq from 'zeromq';
import { encode } from '../shared/wire/codec.js';
import { parseControl, workerToCoordinator, type CoordinatorMessage, type WorkerMessage } from '../shared/wire/control-messages.js';
import type { Logger } from '../shared/core/log.js';
import { SerialSender } from '../shared/wire/sender.js';

export type ControlRejectReason = 'malformed' | 'unexpected';

/**
 * The coordinator's ROUTER socket. Every inbound frame is decoded and validated here; a frame that fails is
 * counted and logged, and the loop keeps serving. `peer` is the hex routing id ZeroMQ gives each worker's DEALER.
 */
export class ControlServer {
  readonly rejected: Record<ControlRejectReason, number> = { malformed: 0, unexpected: 0 };
  private readonly sender: SerialSender<[Buffer, Buffer]>;
  private handler: (peer: string, message: WorkerMessage) => void = () => {};
  private closed = false;

  private constructor(private readonly router: zmq.Router, readonly endpoint: string, private readonly log: Logger, private readonly onReject?: (reason: ControlRejectReason) => void) {
    this.sender = new SerialSender((frames) => this.router.send(frames));
    void this.receiveLoop();
  }

  static async bind(address: string, log: Logger, onReject?: (reason: ControlRejectReason) => void): Promise<ControlServer> {
    const router = new zmq.Router({ linger: 0, mandatory: false, sendHighWaterMark: 10_000 });
    await router.bind(address);
    return new ControlServer(router, router.lastEndpoint ?? address, log, onReject);
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
  }
}
