import type { MessagePort } from 'node:worker_threads';
import { isMnistDdpError } from '../shared/errors.js';
import type { RingAllReducer } from './ring-allreduce.js';
import { MainThreadRingHost } from './ring-host.js';
import { ReceivedFrameCollector } from './young-gc.js';

/** A scavenge per this many bytes received keeps frames from forcing full GCs (young-gc.ts). */
const SCAVENGE_EVERY_BYTES = 8 * 1024 * 1024;
import type { FromRingThread, RingThreadRequest, RingThreadResults, ThreadError, ToRingThread } from './ring-thread-messages.js';

/**
 * The ring thread's side (see ring-thread.ts for why the ring runs here): it owns the inbox and the
 * RingAllReducers, and all-reduces buffers that live in SharedArrayBuffers the main thread registered, in place.
 * Requests are handled as they arrive, so a close can overtake a pending all-reduce (which then fails, as in-thread).
 */
export function serveRingThread(port: MessagePort): void {
  const host = new MainThreadRingHost();
  const collector = new ReceivedFrameCollector(SCAVENGE_EVERY_BYTES);
  const rings = new Map<number, RingAllReducer>();
  const memories = new Map<number, SharedArrayBuffer>();
  /** The last view made of each buffer: one Float32Array per (buffer, length), not one per step. */
  const views = new Map<number, Float32Array>();
  const post = (message: FromRingThread): void => port.postMessage(message);

  const ringOf = (ringId: number): RingAllReducer => {
    const ring = rings.get(ringId);
    if (!ring) throw new Error(`ring thread: no ring ${ringId} (closed, or never connected)`);
    return ring;
  };

  const viewOf = (bufferId: number, length: number): Float32Array => {
    const cached = views.get(bufferId);
    if (cached?.length === length) return cached;
    const memory = memories.get(bufferId);
    if (!memory || memory.byteLength < length * 4) throw new Error(`ring thread: buffer ${bufferId} is not registered or shorter than ${length} floats`);
    const view = new Float32Array(memory, 0, length);
    views.set(bufferId, view);
    return view;
  };

  async function handle(m: RingThreadRequest): Promise<RingThreadResults[RingThreadRequest['kind']]> {
    switch (m.kind) {
      case 'open-inbox':
        return { endpoint: await host.openInbox(m.bindAddress) };
      case 'discard-inbox':
        await host.discardInbox();
        return null;
      case 'connect': {
        const ring = await host.connect(m.config, {
          logBindings: m.logBindings,
          onRejectedFrame: (err) => post({ kind: 'rejected-frame', ringId: m.ringId, error: err.toJSON() }),
        });
        rings.set(m.ringId, ring);
        return { endpoint: ring.endpoint };
      }
      case 'all-reduce': {
        const ring = ringOf(m.ringId);
        await ring.allReduce(viewOf(m.bufferId, m.length), m.step, m.timeoutMs !== undefined ? { timeoutMs: m.timeoutMs } : {});
        // Each rank receives 2(N-1)/N of the buffer: N-1 segments in reduce-scatter and as many in all-gather.
        collector.noteReceived((8 * m.length * (ring.worldSize - 1)) / ring.worldSize);
        return null;
      }
      case 'close-ring': {
        const ring = rings.get(m.ringId);
        rings.delete(m.ringId);
        await ring?.close();
        return null;
      }
      case 'shutdown': {
        // Every socket closed before the thread ends: terminating a thread with open ZeroMQ sockets aborts the process.
        const closing = [...rings.values()].map((r) => r.close());
        rings.clear();
        await Promise.all([...closing, host.terminate()]);
        return null;
      }
    }
  }

  port.on('message', (m: ToRingThread) => {
    if (m.kind === 'register-buffer') {
      memories.set(m.bufferId, m.memory);
      views.delete(m.bufferId);
      return;
    }
    handle(m).then(
      (value) => {
        post({ kind: 'reply', id: m.id, ok: true, value });
        if (m.kind === 'shutdown') port.close();
      },
      (err: unknown) => post({ kind: 'reply', id: m.id, ok: false, error: threadError(err) }),
    );
  });
  post({ kind: 'booted' });
}

function threadError(err: unknown): ThreadError {
  if (isMnistDdpError(err)) return err.toJSON() as ThreadError;
  return { message: err instanceof Error ? err.message : String(err) };
}
