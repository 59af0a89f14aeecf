import * as zmq from 'zeromq';
import { decodeParts, encode, encodeWithPayload } from '../../shared/wire/codec.js';
import { MnistDdpError } from '../../shared/core/errors.js';
import { componentLogger, type Logger } from '../../shared/core/log.js';
import type { RejectReason } from '../../shared/wire/reject-reasons.js';
import { SerialSender } from '../../shared/wire/sender.js';
import { PROTOCOL_VERSION, isRingChunk, isRingHello, messageProblem, type RingChunk, type RingHello, type RingPhase } from '../../shared/wire/ring-messages.js';
import type { AllReduceOptions, AllReducer } from '../../shared/train/reducer.js';
import { DEFAULT_CHUNK_BYTES, HIGH_WATER_MARK, openRingInbox, type RingInbox } from './inbox.js';
import { curveClientOptions } from '../../shared/security/transport.js';
import { FRAME_HEADROOM_BYTES } from '../../shared/wire/frame-limits.js';
import { ReceivedFrameCollector } from './young-gc.js';
import { chunkBounds, receiveStep, ringLayout, type RingLayout } from './topology.js';
import { DEFAULT_CONNECT_TIMEOUT_MS, DEFAULT_SCAVENGE_EVERY_BYTES, parseRingConfig, type ParsedRingConfig, type RingConfig, type RingReducerOptions } from './ring-config.js';
import { FutureStepStash } from './stash.js';
import { RingOperation } from './ring-operation.js';
import { ArenaPool } from './arena-pool.js';
import { ChunkCompressor, type ChunkPayload } from './chunk-compressor.js';
import { UNIT_ROUNDOFF } from '../../shared/wire/half-float.js';
import { RingReadyBarrier } from './ready-barrier.js';
import { FrameRejecter, type RejectedFrame } from './frame-rejecter.js';
import { allReduceCallProblem, drainWithin, helloMismatch, linksUpWithin, receiveFrames, untilReady, watchFirstConnect } from './peer-sockets.js';

export { DEFAULT_CHUNK_BYTES, openRingInbox, type RingInbox } from './inbox.js';
export { DEFAULT_SCAVENGE_EVERY_BYTES, type RingConfig, type RingCurve, type RingReducerOptions } from './ring-config.js';
export { MAX_STASHED_BYTES, MAX_STASH_STEPS_AHEAD } from './stash.js';

/**
 * Bandwidth-optimal ring all-reduce (reduce-scatter, then all-gather; N-1 ring steps each) over ZeroMQ PUSH/PULL.
 * Each segment travels in chunks that are forwarded as soon as they arrive, so sending, receiving and reducing
 * overlap. Every rank ends with bit-identical sums (each segment is reduced once along the ring, then copied).
 */
export class RingAllReducer implements AllReducer {
  readonly rank: number;
  readonly worldSize: number;
  readonly generation: number;
  /** Where this rank's inbox is bound (the address the left neighbour pushes to). */
  readonly endpoint: string;
  /** Frames refused so far, by reason. Rejected frames never touch a reduction. */
  get rejectedFrames(): Record<RejectReason, number> {
    return this.rejecter.counts;
  }
  readonly wireRoundoff: number | undefined;
  bytesSent = 0;

  private readonly config: ParsedRingConfig;
  private readonly left: number;
  private readonly right: number;
  private readonly chunkFloats: number;
  private readonly pull: zmq.Pull;
  private readonly inbox: RingInbox;
  private readonly push: zmq.Push;
  private readonly log: Logger;
  private readonly rejecter: FrameRejecter;
  private readonly sender: SerialSender<Buffer | Buffer[]>;
  private readonly collector: ReceivedFrameCollector | undefined;
  /** The SIMD add's memories: the buffer from `allocate` (summed in place) and those for buffers from elsewhere. */
  private readonly arenas = new ArenaPool();
  private readonly barrier: RingReadyBarrier;
  private readonly stash = new FutureStepStash<RingChunk>();
  /** Present under --compress fp16|bf16: encodes every chunk's gradients in 16 bits, with error feedback. */
  private readonly compressor: ChunkCompressor | undefined;
  private op: RingOperation | undefined;
  private lastStep = -1;
  private layoutCache: RingLayout | undefined;
  private closed = false;
  /** Settles when the connection to the right neighbour is up (its handshake succeeded), or failed. */
  private linksUp: Promise<void> = Promise.resolve();

  /**
   * Binds this rank's inbox, connects to the right neighbour and waits until every rank's hello went round. When it
   * fails, an inbox passed in `options.inbox` is left open for the caller to close: the predecessor may not have
   * connected yet, and a closed inbox would make it report this rank unreachable instead of the rank at fault.
   */
  static async connect(config: RingConfig, options: RingReducerOptions = {}): Promise<RingAllReducer> {
    const c = parseRingConfig(config, options);
    const chunkBytes = c.chunkBytes ?? DEFAULT_CHUNK_BYTES;
    const { curve } = options;
    const left = (c.rank - 1 + c.worldSize) % c.worldSize;
    const allowKey = curve?.peerKeys[left];
    const inbox = options.inbox ?? (await openRingInbox(c.bindAddress ?? c.peers[c.rank] ?? '', {
      chunkBytes, ...(options.logger ? { log: options.logger } : {}), ...(options.observer ? { observer: options.observer } : {}),
      ...(curve && allowKey ? { curve: { keyPair: curve.keyPair, allowKey } } : {}),
    }));
    if (allowKey) inbox.allow(allowKey);
    const reducer = new RingAllReducer(c, inbox, options);
    await untilReady(() => reducer.ready(), (keep) => reducer.close(keep), options.signal, options.inbox !== undefined);
    return reducer;
  }

  private constructor(config: ParsedRingConfig, inbox: RingInbox, options: RingReducerOptions) {
    this.config = config;
    this.rank = config.rank;
    this.worldSize = config.worldSize;
    this.generation = config.generation;
    this.left = (config.rank - 1 + config.worldSize) % config.worldSize;
    this.right = (config.rank + 1) % config.worldSize;
    this.chunkFloats = (config.chunkBytes ?? DEFAULT_CHUNK_BYTES) / 4;
    this.compressor = config.compress === 'none' ? undefined : new ChunkCompressor(config.compress, this.chunkFloats);
    this.wireRoundoff = config.compress === 'none' ? undefined : UNIT_ROUNDOFF[config.compress];
    this.log = options.logger ?? componentLogger('ring', { rank: config.rank, generation: config.generation });
    this.rejecter = new FrameRejecter(config.rank, this.log, options.onRejectedFrame);
    this.barrier = new RingReadyBarrier(config.rank, config.worldSize, config.generation, config.peers);
    this.pull = inbox.socket;
    this.inbox = inbox;
    this.endpoint = inbox.endpoint;
    const serverKey = options.curve?.peerKeys[this.right];
    // The push never receives: its limit is only the header room. As a CURVE client it completes the handshake
    // only with the holder of the right neighbour's secret key.
    const connectTimeout = config.connectTimeoutMs ?? Math.min(DEFAULT_CONNECT_TIMEOUT_MS, config.readyTimeoutMs ?? config.timeoutMs);
    this.push = new zmq.Push({
      sendHighWaterMark: HIGH_WATER_MARK, linger: 0, maxMessageSize: FRAME_HEADROOM_BYTES, connectTimeout,
      ...(options.curve && serverKey ? curveClientOptions(options.curve.keyPair, serverKey) : {}),
    });
    this.sender = new SerialSender((frame) => this.push.send(frame));
    const scavengeEveryBytes = config.scavengeEveryBytes ?? DEFAULT_SCAVENGE_EVERY_BYTES;
    this.collector = scavengeEveryBytes > 0 ? new ReceivedFrameCollector(scavengeEveryBytes) : undefined;
    if (this.collector && !this.collector.enabled) this.log.warn('V8 did not expose gc: received frames will be freed by full GCs only (slower)');
    if (config.worldSize > 1) {
      // A failed first connection to the right neighbour ends the start-up barrier at once (peer-sockets.ts).
      this.linksUp = watchFirstConnect(this.push, { rank: this.rank, to: this.right, address: config.peers[this.right] ?? '?', generation: this.generation, connectTimeoutMs: connectTimeout },
        (err) => this.barrier.fail(err), () => this.closed);
      this.linksUp.catch(() => undefined);
      this.push.connect(config.peers[this.right] ?? '');
    }
    void receiveFrames(this.pull, this.rank, () => this.closed, (parts) => this.onFrame(parts), (lost) => {
      this.barrier.fail(lost);
      if (this.op) this.fail(this.op, lost);
    });
  }

  private ready(): Promise<void> {
    if (this.worldSize === 1) return Promise.resolve();
    const deadline = this.config.readyTimeoutMs ?? this.config.timeoutMs;
    const ready = Promise.all([this.barrier.wait(deadline), linksUpWithin(this.linksUp, deadline, this.rank, this.generation)]).then(() => undefined);
    this.send({ type: 'ring-hello', protocolVersion: PROTOCOL_VERSION, generation: this.generation, worldSize: this.worldSize, rank: this.rank, origin: this.rank, compress: this.config.compress });
    return ready;
  }

  /**
   * Sums `buf` element-wise across the ring, in place, and resolves with `buf`. Every failure is a rejected promise
   * with a MnistDdpError: PEER_LOST (closed, or a neighbour went away), PEER_TIMEOUT (the left neighbour fell
   * silent for `timeoutMs`), ALLREDUCE_BUSY (an earlier call has not settled), STEP_OUT_OF_ORDER (`step` is not an
   * integer above the previous one).
   */
  allReduce(buf: Float32Array, step: number, opts: AllReduceOptions = {}): Promise<Float32Array> {
    const problem = allReduceCallProblem(this.rank, step, { closed: this.closed, running: this.op?.step, lastStep: this.lastStep });
    if (problem) return Promise.reject(problem);
    this.lastStep = step;
    if (this.worldSize === 1 || buf.length === 0) return Promise.resolve(buf);

    this.stash.noteBuffer(buf.byteLength);
    const layout = this.layoutFor(buf.length);
    const arena = this.arenas.arenaFor(buf);
    const timeoutMs = opts.timeoutMs ?? this.config.timeoutMs;
    const compressor = this.compressor;
    compressor?.begin(buf, opts.compressible ?? buf.length);
    return new Promise<Float32Array>((resolve, reject) => {
      const op = new RingOperation(step, buf, layout, this.rank, arena, timeoutMs, (timedOut) => this.onTimeout(timedOut), resolve, reject);
      this.op = op;
      const own = this.rank;
      for (let chunk = 0; chunk < (layout.chunksInSegment[own] ?? 0); chunk++) {
        const [start, end] = chunkBounds(layout, own, chunk);
        const values = buf.subarray(start, end);
        this.sendChunk(op, 'reduce-scatter', own, chunk, compressor ? compressor.encode(values, start) : { data: values });
      }
      const { current, dropped } = this.stash.take(step);
      for (const { frame, reason, message } of dropped) this.reject(reason, message, frame);
      for (const frame of current) this.applyChunk(op, frame);
      if (op.remaining === 0) this.finish(op);
    });
  }

  /**
   * A zeroed buffer of `length` floats in the memory the ring's SIMD add works in: reduce-scatter sums into it in
   * place, without the two copies a buffer from elsewhere needs (sum-arena.ts). Only the buffer from the latest call
   * is summed in place, and only until an all-reduce fails (its staging is then retired with it; the worker forms a
   * new ring and allocates again). Other buffers still work, through the scratch.
   */
  allocate(length: number): Float32Array {
    return this.arenas.allocate(length);
  }

  /** Drops the error-feedback residuals of a compressed ring: the caller skipped the step that produced them. */
  discardCarry(): void {
    this.compressor?.reset();
  }

  /** L2 norm of what the applied sums still owe the true ones (error feedback's residual); 0 without compression. */
  residualNorm(): number {
    return this.compressor?.residualNorm() ?? 0;
  }

  /** Ends every wait (PEER_LOST) and closes the sockets; `keepInbox` leaves the inbox bound (connect's failure path). */
  async close(keepInbox = false): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.barrier.fail(new MnistDdpError('PEER_LOST', `rank ${this.rank}: ring closed before it was ready`, { rank: this.rank }));
    if (this.op) this.fail(this.op, new MnistDdpError('PEER_LOST', `rank ${this.rank}: ring closed during step ${this.op.step}`, { rank: this.rank, step: this.op.step }));
    const lingerMs = this.config.closeLingerMs ?? 500;
    // The last frames of the last step may still be queued here or in ZeroMQ; without them the right neighbour
    // would time out. Give them a bounded time, then drop them (linger) so close() never hangs on a dead peer.
    await drainWithin(this.sender.drained(), lingerMs);
    this.push.linger = lingerMs;
    this.push.close();
    if (!keepInbox) this.inbox.close();
  }

  private layoutFor(length: number): RingLayout {
    if (this.layoutCache?.length !== length) this.layoutCache = ringLayout(length, this.worldSize, this.chunkFloats);
    return this.layoutCache;
  }

  private send(message: RingHello): void {
    this.enqueue(encode(message));
  }

  /** ZeroMQ allows one pending send per socket: frames leave in order through the serial sender. */
  private enqueue(frame: Buffer | Buffer[]): void {
    this.sender.send(frame).catch((err: Error) => {
      if (!this.closed && this.op) this.fail(this.op, new MnistDdpError('PEER_LOST', `rank ${this.rank} could not send to rank ${this.right}: ${err.message}`, { missingRank: this.right }, { cause: err }));
    });
  }

  /**
   * Frames go out without a copy (encodeWithPayload), so `data` must not change until ZeroMQ wrote it.
   * Reduce-scatter frames are views of `buf`: each such segment comes back fully reduced in the all-gather, which
   * proves the right neighbour received it before this rank overwrites it or resolves. All-gather frames are not
   * confirmed before allReduce resolves and the caller may reuse `buf`, so they are views of the op's staging region
   * (the sum is written there directly; forwarded chunks are copied there); the region is reused two steps later,
   * when the next step's frames (queued behind these on the same connection) have come back round the ring.
   * Received memory is never sent on (over ipc that breaks ZeroMQ). A compressed ring's payloads are fresh memory
   * each (chunk-compressor.ts), so none of this applies to them.
   */
  private sendChunk(op: RingOperation, phase: RingPhase, segment: number, chunk: number, { data, halves }: ChunkPayload): void {
    this.bytesSent += data.byteLength;
    this.enqueue(encodeWithPayload({ type: 'ring-chunk', generation: this.generation, step: op.step, rank: this.rank, phase, segment, chunk, ...(halves !== undefined ? { halves } : {}), data }));
  }

  private onFrame(parts: Buffer[]): void {
    let message: unknown;
    try {
      message = decodeParts(parts);
    } catch (err) {
      return this.reject('malformed', (err as Error).message);
    }
    if (isRingChunk(message)) return this.onChunk(message);
    if (isRingHello(message)) return this.onHello(message);
    return this.reject('malformed', messageProblem(message) ?? 'not a data-plane message');
  }

  private onChunk(frame: RingChunk): void {
    if (!this.checkOrigin(frame)) return;
    const op = this.op;
    if (op && frame.step === op.step) return this.applyChunk(op, frame);
    if (frame.step <= this.lastStep) return this.reject('stale', `frame for step ${frame.step} arrived after this rank reached step ${this.lastStep}`, frame);
    const refused = this.stash.offer(frame, this.lastStep);
    if (refused !== undefined) this.reject('unexpected', refused, frame);
  }

  private checkOrigin(frame: RingChunk | RingHello): boolean {
    if (frame.generation < this.generation) {
      this.reject('stale', `frame from generation ${frame.generation}, this ring is generation ${this.generation}`, frame);
      return false;
    }
    if (frame.generation > this.generation) {
      this.reject('unexpected', `frame from generation ${frame.generation} is newer than this ring's generation ${this.generation}; this rank must rejoin`, frame);
      return false;
    }
    if (frame.rank !== this.left) {
      this.reject('unexpected', `frame from rank ${frame.rank}, only the left neighbour rank ${this.left} sends to rank ${this.rank}`, frame);
      return false;
    }
    return true;
  }

  private applyChunk(op: RingOperation, frame: RingChunk): void {
    const { layout } = op;
    const N = this.worldSize;
    const { segment, chunk, phase } = frame;
    const t = segment < N ? receiveStep(phase, this.rank, segment, N) : -1;
    if (t < 0) return this.reject('unexpected', `rank ${this.rank} never receives segment ${segment} in ${phase}`, frame);
    if (chunk >= (layout.chunksInSegment[segment] ?? 0)) return this.reject('unexpected', `segment ${segment} has ${layout.chunksInSegment[segment] ?? 0} chunks, got chunk ${chunk}`, frame);
    const [start, end] = chunkBounds(layout, segment, chunk);
    const c = this.compressor;
    const data = c
      ? c.decode(frame, start, end)
      : frame.data.length === end - start && frame.halves === undefined
        ? frame.data
        : `chunk ${segment}/${chunk} has ${frame.data.length} floats${frame.halves === undefined ? '' : ` and ${frame.halves} 16-bit values`}, expected ${end - start} floats (do all ranks reduce ${layout.length} floats, uncompressed?)`;
    if (typeof data === 'string') return this.reject('unexpected', data, frame);
    if (!op.markReceived(phase, segment, chunk)) return this.reject('duplicate', `chunk ${segment}/${chunk} of ${phase} arrived twice`, frame);

    const target = op.buf.subarray(start, end);
    const staged = op.staging.subarray(start, end);
    if (phase === 'reduce-scatter' && t < N - 2) {
      op.arena.sumInto(target, data);
      this.sendChunk(op, 'reduce-scatter', segment, chunk, c ? c.encode(target, start) : { data: target });
    } else if (phase === 'reduce-scatter' && c) {
      // The finished sum is encoded once, here; this rank keeps the decoded values, as every receiver will.
      op.arena.sumInto(target, data);
      this.sendChunk(op, 'all-gather', segment, chunk, c.encode(target, start, true));
    } else if (phase === 'reduce-scatter') {
      // The last reduce-scatter step completes this segment's sum: it leaves as the first all-gather frame.
      op.arena.sumInto(target, data, staged);
      this.sendChunk(op, 'all-gather', segment, chunk, { data: staged });
    } else {
      target.set(data);
      if (t < N - 2 && c) this.sendChunk(op, 'all-gather', segment, chunk, c.forward(frame));
      else if (t < N - 2) {
        staged.set(data);
        this.sendChunk(op, 'all-gather', segment, chunk, { data: staged });
      }
    }
    if (op.remaining === 0) this.finish(op);
  }

  private finish(op: RingOperation): void {
    clearTimeout(op.timer);
    this.op = undefined;
    op.resolve(op.buf);
    // This rank received N-1 segments in reduce-scatter and as many in all-gather: 2(N-1)/N of the buffer.
    this.collector?.noteReceived((8 * op.buf.length * (this.worldSize - 1)) / this.worldSize);
  }

  private fail(op: RingOperation, err: Error): void {
    clearTimeout(op.timer);
    // Frames of a failed step may sit in ZeroMQ indefinitely: never write into their staging again.
    this.arenas.retire();
    // The buffer that absorbed the residuals is not applied anywhere (chunk-compressor.ts says why they are dropped).
    this.compressor?.reset();
    if (this.op === op) this.op = undefined;
    op.reject(err);
  }

  private onTimeout(op: RingOperation): void {
    const missing = op.firstMissing(this.worldSize);
    const where = missing ? `chunk ${missing.chunk} of segment ${missing.segment} (${missing.phase})` : 'the end of the step';
    this.fail(
      op,
      new MnistDdpError(
        'PEER_TIMEOUT',
        `rank ${this.rank} waited ${op.timeoutMs} ms for rank ${this.left} (left neighbour, ${this.config.peers[this.left] ?? '?'}) at step ${op.step}, ${where}; ` +
          `${op.remaining} frame(s) missing. Rank ${this.left} is dead, stalled, or itself waiting on its own left neighbour.`,
        { missingRank: this.left, rank: this.rank, step: op.step, timeoutMs: op.timeoutMs, missingFrames: op.remaining, ...missing },
      ),
    );
  }

  private onHello(hello: RingHello): void {
    const mismatch = helloMismatch(hello, hello.origin, this.rank, this.worldSize);
    if (mismatch) {
      this.reject('unexpected', mismatch.message, hello);
      this.barrier.fail(mismatch);
      return;
    }
    if (!this.checkOrigin(hello)) return;
    if (hello.origin === this.rank || hello.origin >= this.worldSize) return this.reject('unexpected', `hello with origin ${hello.origin}`, hello);
    if (hello.compress !== this.config.compress) return this.refuseCompression(hello);
    const { duplicate, complete } = this.barrier.hear(hello.origin);
    if (duplicate) return this.reject('duplicate', `second hello from rank ${hello.origin}`, hello);
    if (this.right !== hello.origin) this.send({ ...hello, rank: this.rank });
    if (complete) this.log.debug({ peers: this.config.peers }, 'ring ready');
  }

  /**
   * Ranks that disagree on --compress would misread each other's chunks: the ring refuses to form. The hello goes on
   * round the ring first, so every rank refuses at start-up instead of waiting out its barrier for this one.
   */
  private refuseCompression(hello: RingHello): void {
    if (this.right !== hello.origin) this.send({ ...hello, rank: this.rank });
    const theirs = hello.compress ?? 'unknown';
    const err = new MnistDdpError(
      'HANDSHAKE_MISMATCH',
      `rank ${hello.origin} sends gradients with --compress ${theirs}, rank ${this.rank} with --compress ${this.config.compress}: every rank of a ring must use the same mode (the coordinator's run config sets it for all its workers)`,
      { theirs: { compress: theirs, rank: hello.origin }, ours: { compress: this.config.compress, rank: this.rank } },
    );
    this.reject('unexpected', err.message, hello);
    this.barrier.fail(err);
  }

  private reject(reason: RejectReason, message: string, frame?: RejectedFrame): void {
    this.rejecter.reject(reason, message, frame);
  }

}
