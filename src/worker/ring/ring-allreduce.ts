import * as zmq from 'zeromq';
import { z } from 'zod';
import { decodeParts, encode, encodeWithPayload } from '../../shared/wire/codec.js';
import { MnistDdpError } from '../../shared/core/errors.js';
import { componentLogger, type Logger } from '../../shared/core/log.js';
import { REJECT_CODES, zeroRejectCounts, type RejectReason } from '../../shared/wire/reject-reasons.js';
import { SerialSender } from '../../shared/wire/sender.js';
import { PROTOCOL_VERSION, isRingChunk, isRingHello, messageProblem, type RingChunk, type RingHello, type RingPhase } from '../../shared/wire/ring-messages.js';
import type { AllReduceOptions, AllReducer } from '../../shared/train/reducer.js';
import { SumArena } from './sum-arena.js';
import { DEFAULT_CHUNK_BYTES, HIGH_WATER_MARK, openRingInbox, type RingInbox } from './inbox.js';
import type { CurveKeyPair } from '../../shared/security/keys.js';
import { curveClientOptions, type TransportObserver } from '../../shared/security/transport.js';
import { FRAME_HEADROOM_BYTES, ringFrameLimit } from '../../shared/wire/frame-limits.js';
import { ReceivedFrameCollector } from './young-gc.js';
import { chunkBounds, chunkFlag, framesPerAllReduce, receiveStep, ringLayout, segmentReceivedAt, type RingLayout } from './topology.js';

/**
 * Frames for a step this rank has not started yet are kept: the left neighbour may be one step ahead (it cannot
 * finish a step without this rank's share, so never two). Kept only for the next MAX_STASH_STEPS_AHEAD step numbers
 * (orders may skip numbers), and at most MAX_STASHED_BYTES or twice the largest buffer reduced so far, whichever is
 * more: one step's frames from the left neighbour are under one buffer. Beyond that a frame is refused (issue #15).
 */
export const MAX_STASH_STEPS_AHEAD = 2;
export const MAX_STASHED_BYTES = 64 * 1024 * 1024;
/** Received bytes between two scavenges (young-gc.ts): a quarter of what forces a full GC. */
export const DEFAULT_SCAVENGE_EVERY_BYTES = 8 * 1024 * 1024;

const endpoint = z.string().regex(/^(tcp|ipc|inproc):\/\/.+/, 'expected a ZeroMQ endpoint such as tcp://10.0.0.5:6001 or ipc:///tmp/ring-0');
const ringConfigSchema = z
  .object({
    rank: z.number().int().nonnegative(),
    worldSize: z.number().int().min(1).max(65_536),
    generation: z.number().int().nonnegative(),
    /** Endpoint each rank's inbox binds, indexed by rank; rank r pushes to peers[(r + 1) % worldSize]. */
    peers: z.array(endpoint),
    /** Deadline for silence from the left neighbour during an all-reduce. */
    timeoutMs: z.number().int().positive(),
    /** Deadline for the start-up barrier; defaults to timeoutMs. */
    readyTimeoutMs: z.number().int().positive().optional(),
    chunkBytes: z.number().int().min(4).multipleOf(4).optional(),
    /** Where this rank's inbox binds when it differs from peers[rank] (e.g. tcp://0.0.0.0:6001). */
    bindAddress: endpoint.optional(),
    /** How long close() lets already-queued frames reach the right neighbour before dropping them. */
    closeLingerMs: z.number().int().nonnegative().optional(),
    /** A scavenge after every this many bytes received (young-gc.ts). Default 8 MiB; 0 turns it off (benchmarks compare). */
    scavengeEveryBytes: z.number().int().nonnegative().optional(),
  })
  .strict()
  .superRefine((c, ctx) => {
    if (c.rank >= c.worldSize) ctx.addIssue({ code: 'custom', path: ['rank'], message: `is ${c.rank}, must be below worldSize ${c.worldSize}` });
    if (c.peers.length !== c.worldSize)
      ctx.addIssue({ code: 'custom', path: ['peers'], message: `has ${c.peers.length} endpoints, expected one per rank (${c.worldSize})` });
  });

export type RingConfig = z.input<typeof ringConfigSchema>;
export { DEFAULT_CHUNK_BYTES, openRingInbox, type RingInbox } from './inbox.js';

/** CURVE on the ring: this rank's keypair, and every rank's public key by rank (from the coordinator's `ring`). */
export interface RingCurve {
  keyPair: CurveKeyPair;
  peerKeys: readonly string[];
}

export interface RingReducerOptions {
  logger?: Logger;
  /** Use an inbox opened beforehand (e.g. to advertise an OS-chosen port); the reducer takes ownership. */
  inbox?: RingInbox;
  /** Called for every rejected frame, after it was counted, with the coded error and the reason it was rejected. */
  onRejectedFrame?: (err: MnistDdpError, reason: RejectReason) => void;
  /**
   * Encrypt and authenticate the ring: the inbox admits only the left neighbour's key, and this rank pushes only to
   * the holder of the right neighbour's key. Without it the ring is plaintext (loopback or --insecure runs).
   */
  curve?: RingCurve;
  /** Counts refused handshakes and dropped connections of the inbox. */
  observer?: TransportObserver;
}

interface Operation {
  readonly step: number;
  readonly buf: Float32Array;
  readonly layout: RingLayout;
  /** One flag per (phase, chunk): reduce-scatter chunks first, then all-gather. */
  readonly received: Uint8Array;
  remaining: number;
  /** Sums go through this arena; all-gather frames are sent from `staging`, one of its two regions (see sendChunk). */
  readonly arena: SumArena;
  readonly staging: Float32Array;
  readonly timeoutMs: number;
  readonly timer: NodeJS.Timeout;
  readonly resolve: (buf: Float32Array) => void;
  readonly reject: (err: Error) => void;
}

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
  readonly rejectedFrames: Record<RejectReason, number> = zeroRejectCounts();

  private readonly config: z.output<typeof ringConfigSchema>;
  private readonly left: number;
  private readonly right: number;
  private readonly chunkFloats: number;
  private readonly pull: zmq.Pull;
  private readonly inbox: RingInbox;
  private readonly push: zmq.Push;
  private readonly log: Logger;
  private readonly onRejectedFrame: RingReducerOptions['onRejectedFrame'];
  private readonly sender: SerialSender<Buffer | Buffer[]>;
  private readonly collector: ReceivedFrameCollector | undefined;
  /** The SIMD add's memory holding the buffer from `allocate` (summed in place), with its all-gather staging. */
  private homeArena: SumArena | undefined;
  /**
   * The same for buffers from elsewhere, by length, most recently used last (two: callers such as the benches
   * alternate a barrier with the real buffer).
   */
  private readonly arenas = new Map<number, SumArena>();
  private readonly heardFrom = new Set<number>();
  private readyWaiter: { resolve: () => void; reject: (err: Error) => void } | undefined;
  private op: Operation | undefined;
  private lastStep = -1;
  private stash: RingChunk[] = [];
  private stashedBytes = 0;
  private largestBufferBytes = 0;
  private layoutCache: RingLayout | undefined;
  private closed = false;

  /** Binds this rank's inbox, connects to the right neighbour and waits until every rank's hello went round. */
  static async connect(config: RingConfig, options: RingReducerOptions = {}): Promise<RingAllReducer> {
    const parsed = ringConfigSchema.safeParse(config);
    if (!parsed.success) {
      options.inbox?.close();
      const issue = parsed.error.issues[0];
      throw new MnistDdpError('CONFIG_INVALID', `ring config '${issue?.path.join('.') ?? ''}' ${issue?.message ?? 'is invalid'}`, {
        issues: parsed.error.issues,
      });
    }
    const c = parsed.data;
    const chunkBytes = c.chunkBytes ?? DEFAULT_CHUNK_BYTES;
    const { curve } = options;
    const problem = curve && curve.peerKeys.length !== c.worldSize
      ? `ring curve.peerKeys has ${curve.peerKeys.length} keys, expected one per rank (${c.worldSize})`
      : options.inbox && options.inbox.curve !== (curve !== undefined)
        ? `the inbox was opened ${options.inbox.curve ? 'with' : 'without'} CURVE but the ring ${curve ? 'uses' : 'does not use'} it`
        : options.inbox && options.inbox.maxMessageSize < ringFrameLimit(chunkBytes)
          ? `chunkBytes ${chunkBytes} exceeds what the inbox accepts (${options.inbox.maxMessageSize} bytes per frame); open it with chunkBytes`
          : undefined;
    if (problem) {
      options.inbox?.close();
      throw new MnistDdpError('CONFIG_INVALID', problem, {});
    }
    const left = (c.rank - 1 + c.worldSize) % c.worldSize;
    const allowKey = curve?.peerKeys[left];
    const inbox = options.inbox ?? (await openRingInbox(c.bindAddress ?? c.peers[c.rank] ?? '', {
      chunkBytes, ...(options.logger ? { log: options.logger } : {}), ...(options.observer ? { observer: options.observer } : {}),
      ...(curve && allowKey ? { curve: { keyPair: curve.keyPair, allowKey } } : {}),
    }));
    if (allowKey) inbox.allow(allowKey);
    const reducer = new RingAllReducer(c, inbox, options);
    try {
      await reducer.ready();
    } catch (err) {
      await reducer.close();
      throw err;
    }
    return reducer;
  }

  private constructor(config: z.output<typeof ringConfigSchema>, inbox: RingInbox, options: RingReducerOptions) {
    this.config = config;
    this.rank = config.rank;
    this.worldSize = config.worldSize;
    this.generation = config.generation;
    this.left = (config.rank - 1 + config.worldSize) % config.worldSize;
    this.right = (config.rank + 1) % config.worldSize;
    this.chunkFloats = (config.chunkBytes ?? DEFAULT_CHUNK_BYTES) / 4;
    this.log = options.logger ?? componentLogger('ring', { rank: config.rank, generation: config.generation });
    this.onRejectedFrame = options.onRejectedFrame;
    this.pull = inbox.socket;
    this.inbox = inbox;
    this.endpoint = inbox.endpoint;
    const serverKey = options.curve?.peerKeys[this.right];
    // The push never receives: its limit is only the header room. As a CURVE client it completes the handshake
    // only with the holder of the right neighbour's secret key.
    this.push = new zmq.Push({
      sendHighWaterMark: HIGH_WATER_MARK, linger: 0, maxMessageSize: FRAME_HEADROOM_BYTES,
      ...(options.curve && serverKey ? curveClientOptions(options.curve.keyPair, serverKey) : {}),
    });
    this.sender = new SerialSender((frame) => this.push.send(frame));
    const scavengeEveryBytes = config.scavengeEveryBytes ?? DEFAULT_SCAVENGE_EVERY_BYTES;
    this.collector = scavengeEveryBytes > 0 ? new ReceivedFrameCollector(scavengeEveryBytes) : undefined;
    if (this.collector && !this.collector.enabled) this.log.warn('V8 did not expose gc: received frames will be freed by full GCs only (slower)');
    if (config.worldSize > 1) this.push.connect(config.peers[this.right] ?? '');
    void this.receiveLoop();
  }

  private ready(): Promise<void> {
    if (this.worldSize === 1) return Promise.resolve();
    const timeoutMs = this.config.readyTimeoutMs ?? this.config.timeoutMs;
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        const missing = [...Array(this.worldSize).keys()].filter((r) => r !== this.rank && !this.heardFrom.has(r));
        // A hello from rank o reaches this rank through every rank between them, so the nearest silent rank on the
        // left is the one that is down (or unreachable); the others are merely behind it.
        const nearest = this.nearestMissingOnLeft(missing);
        reject(
          new MnistDdpError(
            'PEER_TIMEOUT',
            `rank ${this.rank} waited ${timeoutMs} ms for the ring of ${this.worldSize} (generation ${this.generation}) to form and never heard from rank(s) ${missing.join(', ')}; ` +
              `rank ${nearest} (${this.config.peers[nearest] ?? '?'}) is the nearest silent rank on the left: check that it runs and that its inbox is reachable`,
            { missingRank: nearest, missingRanks: missing, rank: this.rank, timeoutMs },
          ),
        );
      }, timeoutMs);
      this.readyWaiter = {
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
        reject: (err) => {
          clearTimeout(timer);
          reject(err);
        },
      };
      this.send({ type: 'ring-hello', protocolVersion: PROTOCOL_VERSION, generation: this.generation, worldSize: this.worldSize, rank: this.rank, origin: this.rank });
    });
  }

  private nearestMissingOnLeft(missing: readonly number[]): number {
    for (let d = 1; d < this.worldSize; d++) {
      const r = (this.rank - d + this.worldSize) % this.worldSize;
      if (missing.includes(r)) return r;
    }
    return this.left;
  }

  /**
   * Sums `buf` element-wise across the ring, in place, and resolves with `buf`. Every failure is a rejected promise
   * with a MnistDdpError: PEER_LOST (closed, or a neighbour went away), PEER_TIMEOUT (the left neighbour fell
   * silent for `timeoutMs`), ALLREDUCE_BUSY (an earlier call has not settled), STEP_OUT_OF_ORDER (`step` is not an
   * integer above the previous one).
   */
  allReduce(buf: Float32Array, step: number, opts: AllReduceOptions = {}): Promise<Float32Array> {
    if (this.closed) return Promise.reject(new MnistDdpError('PEER_LOST', `rank ${this.rank}: allReduce called after close()`, { rank: this.rank }));
    if (this.op) {
      return Promise.reject(
        new MnistDdpError('ALLREDUCE_BUSY', `rank ${this.rank}: allReduce(step ${step}) called while step ${this.op.step} is still running; await each all-reduce before the next`, {
          rank: this.rank, step, running: this.op.step,
        }),
      );
    }
    if (!Number.isSafeInteger(step) || step <= this.lastStep) {
      return Promise.reject(
        new MnistDdpError('STEP_OUT_OF_ORDER', `rank ${this.rank}: step ${step} must be an integer above the previous step ${this.lastStep}`, {
          rank: this.rank, step, previousStep: this.lastStep,
        }),
      );
    }
    this.lastStep = step;
    if (this.worldSize === 1 || buf.length === 0) return Promise.resolve(buf);

    this.largestBufferBytes = Math.max(this.largestBufferBytes, buf.byteLength);
    const layout = this.layoutFor(buf.length);
    const arena = this.arenaFor(buf);
    const timeoutMs = opts.timeoutMs ?? this.config.timeoutMs;
    return new Promise<Float32Array>((resolve, reject) => {
      const op: Operation = {
        step,
        buf,
        layout,
        received: new Uint8Array(2 * layout.totalChunks),
        remaining: framesPerAllReduce(layout, this.rank),
        arena,
        staging: arena.nextStaging(),
        timeoutMs,
        timer: setTimeout(() => this.onTimeout(op), timeoutMs),
        resolve,
        reject,
      };
      this.op = op;
      const own = this.rank;
      for (let chunk = 0; chunk < (layout.chunksInSegment[own] ?? 0); chunk++) {
        const [start, end] = chunkBounds(layout, own, chunk);
        this.sendChunk(op, 'reduce-scatter', own, chunk, buf.subarray(start, end));
      }

      const stashed = this.stash;
      this.stash = [];
      this.stashedBytes = 0;
      for (const frame of stashed) {
        if (frame.step === step) this.applyChunk(op, frame);
        else if (frame.step < step) this.reject('stale', `step ${frame.step} frame from rank ${frame.rank} was stashed but this rank moved on to step ${step}`, frame);
        else if (frame.step > step + MAX_STASH_STEPS_AHEAD) this.reject('unexpected', `stashed frame for step ${frame.step} is more than ${MAX_STASH_STEPS_AHEAD} steps ahead of step ${step}`, frame);
        else {
          this.stash.push(frame);
          this.stashedBytes += frame.data.byteLength;
        }
      }
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
    this.homeArena = new SumArena(length, length);
    return this.homeArena.home;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.readyWaiter?.reject(new MnistDdpError('PEER_LOST', `rank ${this.rank}: ring closed before it was ready`, { rank: this.rank }));
    if (this.op) this.fail(this.op, new MnistDdpError('PEER_LOST', `rank ${this.rank}: ring closed during step ${this.op.step}`, { rank: this.rank, step: this.op.step }));
    const lingerMs = this.config.closeLingerMs ?? 500;
    // The last frames of the last step may still be queued here or in ZeroMQ; without them the right neighbour
    // would time out. Give them a bounded time, then drop them (linger) so close() never hangs on a dead peer.
    if (lingerMs > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([this.sender.drained(), new Promise<void>((resolve) => (timer = setTimeout(resolve, lingerMs)))]);
      clearTimeout(timer);
    }
    this.push.linger = lingerMs;
    this.push.close();
    this.inbox.close();
  }

  private arenaFor(buf: Float32Array): SumArena {
    if (this.homeArena?.holds(buf)) return this.homeArena;
    const arena = this.arenas.get(buf.length) ?? new SumArena(0, buf.length);
    this.arenas.delete(buf.length);
    this.arenas.set(buf.length, arena);
    while (this.arenas.size > 2) this.arenas.delete(this.arenas.keys().next().value!);
    return arena;
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
   * Received memory is never sent on (over ipc that breaks ZeroMQ).
   */
  private sendChunk(op: Operation, phase: RingPhase, segment: number, chunk: number, data: Float32Array): void {
    this.enqueue(encodeWithPayload({ type: 'ring-chunk', generation: this.generation, step: op.step, rank: this.rank, phase, segment, chunk, data }));
  }

  private async receiveLoop(): Promise<void> {
    for (;;) {
      let parts: Buffer[];
      try {
        parts = await this.pull.receive();
      } catch (err) {
        if (this.closed) return;
        const lost = new MnistDdpError('PEER_LOST', `rank ${this.rank} can no longer receive: ${(err as Error).message}`, { rank: this.rank }, { cause: err });
        this.readyWaiter?.reject(lost);
        if (this.op) this.fail(this.op, lost);
        return;
      }
      this.onFrame(parts);
    }
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
    // Before its first step a rank cannot know where the run stands (a resumed run starts at any step number).
    if (this.lastStep >= 0 && frame.step > this.lastStep + MAX_STASH_STEPS_AHEAD) {
      return this.reject('unexpected', `frame for step ${frame.step} is more than ${MAX_STASH_STEPS_AHEAD} steps ahead of this rank's step ${this.lastStep}`, frame);
    }
    const limit = Math.max(MAX_STASHED_BYTES, 2 * this.largestBufferBytes);
    if (this.stashedBytes + frame.data.byteLength > limit) {
      return this.reject('unexpected', `frames for future steps would exceed ${limit} bytes (step ${frame.step})`, frame);
    }
    // The frame's floats may view ZeroMQ's received memory; kept as they are, like every received frame until used.
    this.stash.push(frame);
    this.stashedBytes += frame.data.byteLength;
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

  private applyChunk(op: Operation, frame: RingChunk): void {
    const { layout } = op;
    const N = this.worldSize;
    const { segment, chunk, phase } = frame;
    const t = segment < N ? receiveStep(phase, this.rank, segment, N) : -1;
    if (t < 0) return this.reject('unexpected', `rank ${this.rank} never receives segment ${segment} in ${phase}`, frame);
    if (chunk >= (layout.chunksInSegment[segment] ?? 0)) return this.reject('unexpected', `segment ${segment} has ${layout.chunksInSegment[segment] ?? 0} chunks, got chunk ${chunk}`, frame);
    const [start, end] = chunkBounds(layout, segment, chunk);
    if (frame.data.length !== end - start) {
      return this.reject('unexpected', `chunk ${segment}/${chunk} has ${frame.data.length} floats, expected ${end - start} (do all ranks reduce ${layout.length} floats?)`, frame);
    }
    const flag = chunkFlag(layout, phase, segment, chunk);
    if (op.received[flag] === 1) return this.reject('duplicate', `chunk ${segment}/${chunk} of ${phase} arrived twice`, frame);
    op.received[flag] = 1;
    op.remaining--;
    op.timer.refresh();

    const target = op.buf.subarray(start, end);
    const data = frame.data;
    const staged = op.staging.subarray(start, end);
    if (phase === 'reduce-scatter' && t < N - 2) {
      op.arena.sumInto(target, data);
      this.sendChunk(op, 'reduce-scatter', segment, chunk, target);
    } else if (phase === 'reduce-scatter') {
      // The last reduce-scatter step completes this segment's sum: it leaves as the first all-gather frame.
      op.arena.sumInto(target, data, staged);
      this.sendChunk(op, 'all-gather', segment, chunk, staged);
    } else {
      target.set(data);
      if (t < N - 2) {
        staged.set(data);
        this.sendChunk(op, 'all-gather', segment, chunk, staged);
      }
    }
    if (op.remaining === 0) this.finish(op);
  }

  private finish(op: Operation): void {
    clearTimeout(op.timer);
    this.op = undefined;
    op.resolve(op.buf);
    // This rank received N-1 segments in reduce-scatter and as many in all-gather: 2(N-1)/N of the buffer.
    this.collector?.noteReceived((8 * op.buf.length * (this.worldSize - 1)) / this.worldSize);
  }

  private fail(op: Operation, err: Error): void {
    clearTimeout(op.timer);
    // Frames of a failed step may sit in ZeroMQ indefinitely: never write into their staging again.
    this.arenas.clear();
    this.homeArena = undefined;
    if (this.op === op) this.op = undefined;
    op.reject(err);
  }

  private onTimeout(op: Operation): void {
    const missing = this.firstMissing(op);
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

  private firstMissing(op: Operation): { phase: RingPhase; segment: number; chunk: number } | undefined {
    const N = this.worldSize;
    for (const phase of ['reduce-scatter', 'all-gather'] as const) {
      for (let t = 0; t < N - 1; t++) {
        const segment = segmentReceivedAt(phase, this.rank, t, N);
        for (let chunk = 0; chunk < (op.layout.chunksInSegment[segment] ?? 0); chunk++) {
          if (op.received[chunkFlag(op.layout, phase, segment, chunk)] !== 1) return { phase, segment, chunk };
        }
      }
    }
    return undefined;
  }

  private onHello(hello: RingHello): void {
    if (hello.protocolVersion !== PROTOCOL_VERSION || hello.worldSize !== this.worldSize) {
      const err = new MnistDdpError(
        'HANDSHAKE_MISMATCH',
        `rank ${hello.origin} speaks protocol ${hello.protocolVersion} with world size ${hello.worldSize}; rank ${this.rank} speaks protocol ${PROTOCOL_VERSION} with world size ${this.worldSize}. Run the same mnist-ddp version and membership everywhere`,
        { theirs: { protocolVersion: hello.protocolVersion, worldSize: hello.worldSize, rank: hello.origin }, ours: { protocolVersion: PROTOCOL_VERSION, worldSize: this.worldSize, rank: this.rank } },
      );
      this.reject('unexpected', err.message, hello);
      this.readyWaiter?.reject(err);
      return;
    }
    if (!this.checkOrigin(hello)) return;
    if (hello.origin === this.rank || hello.origin >= this.worldSize) return this.reject('unexpected', `hello with origin ${hello.origin}`, hello);
    if (this.heardFrom.has(hello.origin)) return this.reject('duplicate', `second hello from rank ${hello.origin}`, hello);
    this.heardFrom.add(hello.origin);
    if (this.right !== hello.origin) this.send({ ...hello, rank: this.rank });
    if (this.heardFrom.size === this.worldSize - 1) {
      this.readyWaiter?.resolve();
      this.log.debug({ peers: this.config.peers }, 'ring ready');
    }
  }

  private reject(reason: RejectReason, message: string, frame?: { type: string; rank: number; generation: number; step?: number }): void {
    this.rejectedFrames[reason]++;
    const err = new MnistDdpError(REJECT_CODES[reason], `rank ${this.rank} rejected a frame: ${message}`, {
      reason,
      ...(frame && { type: frame.type, from: frame.rank, generation: frame.generation, step: frame.step }),
    });
    this.log.warn({ err: err.toJSON() }, 'frame rejected');
    this.onRejectedFrame?.(err, reason);
  }
}

