import type { MnistDdpError } from '../shared/errors.js';
import { componentLogger } from '../shared/log.js';
import type { AllReducer } from './allreduce.js';
import { openRingInbox, RingAllReducer, type RingConfig, type RingInbox } from './ring-allreduce.js';
import { RingThread } from './ring-thread.js';

export interface RingConnectOptions {
  onRejectedFrame?: (err: MnistDdpError) => void;
  /** Added to the ring's log lines (e.g. the worker id). */
  logBindings?: Record<string, unknown>;
}

/**
 * Where a worker runs its ring all-reduce: the thread that owns the inbox and the ring's sockets. The worker opens the
 * inbox when the coordinator asks for its address and connects the ring when the membership is final.
 */
export interface RingHost {
  /** Binds the inbox the next `connect` uses; resolves with the bound endpoint (an OS-chosen port filled in). */
  openInbox(bindAddress: string): Promise<string>;
  /** Closes an inbox no ring took (the run shrank to one worker). */
  discardInbox(): Promise<void>;
  /** Connects a ring through the inbox opened last (or, without one, binding peers[rank]). */
  connect(config: RingConfig, options?: RingConnectOptions): Promise<AllReducer>;
  /** Closes whatever is still open. */
  terminate(): Promise<void>;
}

/**
 * Gradients of at least this many bytes are all-reduced on a ring thread (ring-thread.ts explains why), smaller
 * ones on the main thread. The thread costs two hand-offs per step, the main thread a share of full GCs of its heap
 * per received byte. Measured in processes holding tfjs (.scratch/ar-product.ts, 2 ranks, p50 / CPU per call, main
 * thread vs ring thread): 1 MiB 1.6–1.8 / 2.4–2.9 vs 1.8–2.5 / 2.4–3.3 ms (about even); 2 MiB 3.5–3.9 / 5.8–8.0 vs
 * 3.1–3.3 / 4.2–4.3 ms; 8 MiB 20.6–22.1 vs 11.2–13.3 ms. Training the cnn (133 KiB) with 2 workers on the thread ran
 * 4–8 % slower (`mnist-ddp bench --workers 2`, three alternating pairs; all-reduce p50 +1 ms). So: `cnn`, `lenet`
 * and `mlp` reduce on the main thread, `cnn-large` (1.8 MiB) on the ring thread.
 */
export const RING_THREAD_MIN_BYTES = 1024 * 1024;

/** The host for a gradient buffer of `gradientBytes`. */
export async function ringHostFor(gradientBytes: number): Promise<RingHost> {
  return gradientBytes >= RING_THREAD_MIN_BYTES ? RingThread.start() : new MainThreadRingHost();
}

/** The ring on the calling thread: RingAllReducer with the inbox opened here (the ring thread uses it too). */
export class MainThreadRingHost implements RingHost {
  private inbox: RingInbox | undefined;

  async openInbox(bindAddress: string): Promise<string> {
    this.inbox?.socket.close();
    this.inbox = undefined;
    this.inbox = await openRingInbox(bindAddress);
    return this.inbox.endpoint;
  }

  discardInbox(): Promise<void> {
    this.inbox?.socket.close();
    this.inbox = undefined;
    return Promise.resolve();
  }

  connect(config: RingConfig, options: RingConnectOptions = {}): Promise<RingAllReducer> {
    const inbox = this.inbox;
    this.inbox = undefined;
    return RingAllReducer.connect(config, {
      ...(inbox && { inbox }),
      logger: componentLogger('ring', { ...options.logBindings, rank: config.rank, generation: config.generation }),
      ...(options.onRejectedFrame && { onRejectedFrame: options.onRejectedFrame }),
    });
  }

  terminate(): Promise<void> {
    return this.discardInbox();
  }
}
