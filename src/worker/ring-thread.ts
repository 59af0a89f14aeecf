import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { isErrorCode, MnistDdpError } from '../shared/errors.js';
import type { RejectReason } from '../shared/metrics.js';
import type { AllReduceOptions, AllReducer } from './allreduce.js';
import type { RingConfig } from './ring-allreduce.js';
import type { RingConnectOptions, RingHost } from './ring-host.js';
import type { FromRingThread, RingThreadRequest, RingThreadResults, ThreadError, ToRingThread } from './ring-thread-messages.js';

/**
 * The ring all-reduce on a thread of its own: the worker's data plane.
 *
 * Why a thread: every frame zeromq.js receives becomes a Buffer over ZeroMQ's memory, and V8 counts those bytes as
 * external memory (twice: zeromq.js reports them, and so does the ArrayBuffer). Every 64 MiB of it forces a full
 * mark-compact of the receiving thread's heap. A training worker's heap holds tfjs (about 20 MB), so on the main
 * thread an 8 MiB all-reduce paid full GCs of that heap: p50 21–25 ms between two processes, against 10.5–12.2 ms
 * with the ring here, where the heap is the ring's own (about 6 MB) and the GCs are short
 * (.scratch measurements: the same ring, 150 iterations per run, three runs each, 2-core host).
 * It also keeps frame handling off the thread that runs the training step.
 *
 * Gradients stay put: `allocate` hands out Float32Arrays over SharedArrayBuffers the thread sums into in place. A
 * buffer from elsewhere works too, at the cost of a copy in and out.
 */
export class RingThread implements RingHost {
  private readonly pending = new Map<number, { resolve: (value: unknown) => void; reject: (err: Error) => void }>();
  private readonly rejectListeners = new Map<number, (err: MnistDdpError) => void>();
  private nextId = 1;
  private exited: Error | undefined;
  private stopping = false;

  private constructor(private readonly thread: Worker) {
    thread.on('message', (m: FromRingThread) => this.onMessage(m));
    thread.on('error', (err) => this.onExit(new Error(`ring thread failed: ${err.message}`, { cause: err })));
    thread.on('exit', (code) => this.onExit(new Error(this.stopping ? 'ring thread terminated' : `ring thread exited with code ${code}`)));
  }

  /** Starts the thread and waits until it serves requests. */
  static async start(): Promise<RingThread> {
    const thread = new Worker(BOOTSTRAP, { eval: true, workerData: threadEntry() });
    const booted = await new Promise<FromRingThread>((resolve, reject) => {
      thread.once('message', resolve);
      thread.once('error', reject);
    });
    if (booted.kind !== 'booted') {
      await thread.terminate();
      throw new Error(`ring thread did not start: ${booted.kind === 'boot-failed' ? booted.message : booted.kind}`);
    }
    return new RingThread(thread);
  }

  /** Binds the inbox the next `connect` uses; resolves with the bound endpoint (an OS-chosen port filled in). */
  async openInbox(bindAddress: string): Promise<string> {
    return (await this.request<'open-inbox'>({ kind: 'open-inbox', bindAddress })).endpoint;
  }

  /** Closes an inbox no ring took (the run shrank to one worker). */
  async discardInbox(): Promise<void> {
    await this.request({ kind: 'discard-inbox' });
  }

  /** RingAllReducer.connect on the thread, using the inbox opened last (or binding peers[rank] without one). */
  async connect(config: RingConfig, options: RingConnectOptions = {}): Promise<ThreadedRing> {
    const ringId = this.nextId++;
    const ring = new ThreadedRing(this, ringId, config);
    this.rejectListeners.set(ringId, (err) => {
      ring.countRejected(err);
      options.onRejectedFrame?.(err);
    });
    try {
      ring.endpoint = (await this.request<'connect'>({ kind: 'connect', ringId, config, logBindings: options.logBindings ?? {} })).endpoint;
    } catch (err) {
      this.rejectListeners.delete(ringId);
      throw err;
    }
    return ring;
  }

  /**
   * Stops the thread: its rings close (pending all-reduces fail with PEER_LOST) and its sockets with them, then the
   * thread ends. Worker.terminate is only the fallback after SHUTDOWN_MS: ending a thread that still has open ZeroMQ
   * sockets aborts the whole process.
   */
  async terminate(): Promise<void> {
    if (this.exited) return;
    this.stopping = true;
    const ended = new Promise<void>((resolve) => this.thread.once('exit', () => resolve()));
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), SHUTDOWN_MS)));
    const outcome = await Promise.race([this.request<'shutdown'>({ kind: 'shutdown' }).then(() => ended), deadline]).catch(() => 'late' as const);
    clearTimeout(timer);
    this.onExit(new Error('ring thread terminated'));
    if (outcome === 'late') await this.thread.terminate();
  }

  /** @internal for ThreadedRing: makes `memory` known to the thread; returns the id requests name it by. */
  share(memory: SharedArrayBuffer): number {
    const bufferId = this.nextId++;
    this.thread.postMessage({ kind: 'register-buffer', bufferId, memory } satisfies ToRingThread);
    return bufferId;
  }

  /** @internal for ThreadedRing */
  forget(ringId: number): void {
    this.rejectListeners.delete(ringId);
  }

  /** @internal for ThreadedRing: one request, one reply. */
  request<K extends RingThreadRequest['kind']>(message: DistributiveOmit<Extract<RingThreadRequest, { kind: K }>, 'id'>): Promise<RingThreadResults[K]> {
    if (this.exited) return Promise.reject(this.exited);
    const id = this.nextId++;
    return new Promise<RingThreadResults[K]>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (value: unknown) => void, reject });
      this.thread.postMessage({ ...message, id });
    });
  }

  private onMessage(m: FromRingThread): void {
    if (m.kind === 'rejected-frame') {
      this.rejectListeners.get(m.ringId)?.(rebuild(m.error) as MnistDdpError);
      return;
    }
    if (m.kind !== 'reply') return;
    const waiter = this.pending.get(m.id);
    if (!waiter) return;
    this.pending.delete(m.id);
    if (m.ok) waiter.resolve(m.value);
    else waiter.reject(rebuild(m.error));
  }

  private onExit(reason: Error): void {
    this.exited ??= reason;
    for (const waiter of this.pending.values()) waiter.reject(this.exited);
    this.pending.clear();
  }
}

/** One ring (one generation) served by a RingThread: the AllReducer the training step calls. */
export class ThreadedRing implements AllReducer {
  readonly rank: number;
  readonly worldSize: number;
  readonly generation: number;
  /** Where the thread's inbox is bound (the address the left neighbour pushes to); set once connected. */
  endpoint = '';
  /** Frames the thread's ring refused so far, by reason (as RingAllReducer.rejectedFrames). */
  readonly rejectedFrames: Record<RejectReason, number> = { malformed: 0, stale: 0, duplicate: 0, unexpected: 0 };
  /** Buffers this ring handed out, by their memory; the thread knows them by id. */
  private readonly buffers = new Map<SharedArrayBuffer, number>();
  /** Memory for callers' own buffers, copied in and out (grown to the largest length seen). */
  private staging: Float32Array | undefined;
  private closed = false;

  constructor(private readonly thread: RingThread, private readonly ringId: number, config: RingConfig) {
    this.rank = config.rank;
    this.worldSize = config.worldSize;
    this.generation = config.generation;
  }

  allocate(length: number): Float32Array {
    const memory = new SharedArrayBuffer(length * 4);
    this.buffers.set(memory, this.thread.share(memory));
    return new Float32Array(memory);
  }

  async allReduce(buf: Float32Array, step: number, opts: AllReduceOptions = {}): Promise<Float32Array> {
    if (this.closed) throw new MnistDdpError('PEER_LOST', `rank ${this.rank}: allReduce called after close()`, { rank: this.rank });
    const own = buf.buffer instanceof SharedArrayBuffer && buf.byteOffset === 0 ? this.buffers.get(buf.buffer) : undefined;
    const target = own !== undefined ? buf : this.stagingFor(buf);
    const bufferId = own ?? this.buffers.get(target.buffer as SharedArrayBuffer)!;
    await this.thread.request({
      kind: 'all-reduce', ringId: this.ringId, bufferId, length: buf.length, step,
      ...(opts.timeoutMs !== undefined && { timeoutMs: opts.timeoutMs }),
    });
    if (target !== buf) buf.set(target.subarray(0, buf.length));
    return buf;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // Like RingAllReducer.close, this never throws: a thread that already exited took the ring with it.
    await this.thread.request({ kind: 'close-ring', ringId: this.ringId }).catch(() => undefined);
    this.thread.forget(this.ringId);
  }

  /** @internal counts a frame the thread's ring rejected. */
  countRejected(err: MnistDdpError): void {
    const reason = err.details.reason as RejectReason | undefined;
    if (reason !== undefined && reason in this.rejectedFrames) this.rejectedFrames[reason]++;
  }

  private stagingFor(buf: Float32Array): Float32Array {
    if (!this.staging || this.staging.length < buf.length) this.staging = this.allocate(buf.length);
    this.staging.set(buf);
    return this.staging;
  }
}

/** How long terminate() waits for the thread to close its sockets and end by itself. */
const SHUTDOWN_MS = 5_000;

type DistributiveOmit<T, K extends keyof T> = T extends unknown ? Omit<T, K> : never;

function rebuild(error: ThreadError): Error {
  if (error.code !== undefined && isErrorCode(error.code)) return new MnistDdpError(error.code, error.message, error.details ?? {});
  return new Error(error.message);
}

/**
 * The thread runs ring-thread-main: the compiled .js next to this file, or, when this file is TypeScript source
 * (tests, tsx), the .ts through tsx's loader, registered inside the thread.
 */
function threadEntry(): { entry: string; tsxApi?: string } {
  const source = import.meta.url.endsWith('.ts');
  const entry = new URL(`./ring-thread-main.${source ? 'ts' : 'js'}`, import.meta.url).href;
  if (!source) return { entry };
  // tsx's ESM API (its CommonJS one cannot register from a thread); import.meta.resolve is missing under vitest.
  const manifest = createRequire(import.meta.url).resolve('tsx/package.json');
  const api = (JSON.parse(readFileSync(manifest, 'utf8')) as { exports: Record<string, { import: { default: string } }> }).exports['./esm/api']!.import.default;
  return { entry, tsxApi: pathToFileURL(join(dirname(manifest), api)).href };
}

const BOOTSTRAP = `
const { parentPort, workerData } = require('node:worker_threads');
(async () => {
  if (workerData.tsxApi) (await import(workerData.tsxApi)).register();
  const { serveRingThread } = await import(workerData.entry);
  serveRingThread(parentPort);
})().catch((err) => parentPort.postMessage({ kind: 'boot-failed', message: String((err && err.stack) || err) }));
`;
