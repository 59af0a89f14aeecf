import { timingSafeEqual } from 'node:crypto';
import * as zmq from 'zeromq';
import { decodeParts, encode } from '../../shared/wire/codec.js';
import { MnistDdpError } from '../../shared/core/errors.js';
import { componentLogger, type Logger } from '../../shared/core/log.js';
import type { RejectReason } from '../../shared/wire/reject-reasons.js';
import { SerialSender } from '../../shared/wire/sender.js';
import {
  PROTOCOL_VERSION, isDoublingChunk, isDoublingHello, messageProblem, type DoublingChunk, type DoublingHello,
} from '../../shared/wire/ring-messages.js';
import type { AllReduceOptions, AllReducer } from '../../shared/train/reducer.js';
import { curveClientOptions } from '../../shared/security/transport.js';
import { FRAME_HEADROOM_BYTES } from '../../shared/wire/frame-limits.js';
import { DEFAULT_CHUNK_BYTES, HIGH_WATER_MARK, openRingInbox, type RingInbox } from './inbox.js';
import { DEFAULT_CONNECT_TIMEOUT_MS, parseRingConfig, type ParsedRingConfig, type RingConfig, type RingReducerOptions } from './ring-config.js';
import { doublingSchedule, type DoublingRound, type DoublingSchedule } from '../../shared/wire/doubling-schedule.js';
import { FutureStepStash } from './stash.js';
import { ArenaPool } from './arena-pool.js';
import { RingReadyBarrier } from './ready-barrier.js';
import { FrameRejecter, type RejectedFrame } from './frame-rejecter.js';
import { allReduceCallProblem, drainWithin, helloMismatch, linksUpWithin, receiveFrames, untilReady, watchFirstConnect } from './peer-sockets.js';

/**
 * The secrets that bind frames to senders when the inbox admits several peers: one per directed link of this
 * generation, issued by the coordinator over the encrypted control plane. A frame claiming rank s is accepted only
 * with the token of the link s → this rank, which only s and the coordinator know (the ring's CURVE links keep it
 * secret on the way), so no other admitted peer can speak for s.
 */
export interface LinkTokens {
  /** By receiving rank: the token to put on frames to it. */
  send: ReadonlyMap<number, Uint8Array>;
  /** By sending rank: the token its frames must carry. */
  receive: ReadonlyMap<number, Uint8Array>;
}

/** The coordinator's hex tokens by rank (control-messages.ts ringMessage `links`) as LinkTokens. */
export function linkTokensOf(links: { send: Record<string, string>; receive: Record<string, string> }): LinkTokens {
  const decode = (byRank: Record<string, string>): Map<number, Uint8Array> => new Map(Object.entries(byRank).map(([rank, hex]) => [Number(rank), Buffer.from(hex, 'hex')]));
  return { send: decode(links.send), receive: decode(links.receive) };
}

export interface DoublingReducerOptions extends RingReducerOptions {
  /** Required on CURVE runs (the inbox admits several keys there). */
  links?: LinkTokens;
}

/** One all-reduce in flight: the buffer, where in the schedule this rank is, and the partials that came early. */
interface DoublingOperation {
  step: number;
  buf: Float32Array;
  /** Index into the schedule's rounds of the round being worked on. */
  at: number;
  /** Whether this rank already sent its partial for the round at `at`. */
  sent: boolean;
  /** Received chunks by round, kept until their round comes (a partner of a later round may be ahead). */
  received: Map<number, (Float32Array | undefined)[]>;
  timeoutMs: number;
  timer: NodeJS.Timeout;
  resolve: (buf: Float32Array) => void;
  reject: (err: Error) => void;
}

/**
 * Recursive-doubling all-reduce (shared/wire/doubling-schedule.ts) over ZeroMQ: one PUSH socket per partner and the same kind of
 * inbox as the ring, admitting exactly the partners that send to this rank. Each round sends the whole partial (in
 * chunks of at most `chunkBytes`, copied into the frame: the next round adds into the same buffer at once), so it
 * moves log2(N) buffers per rank where the ring moves 2(N−1)/N, in log2(N) hops instead of 2(N−1): the collective for
 * small, latency-bound buffers. Failures are the ring's (PEER_LOST, PEER_TIMEOUT naming the partner awaited,
 * PEER_UNREACHABLE, ALLREDUCE_BUSY, STEP_OUT_OF_ORDER), and every rank ends with bit-identical sums.
 */
export class DoublingAllReducer implements AllReducer {
  readonly rank: number;
  readonly worldSize: number;
  readonly generation: number;
  readonly endpoint: string;
  readonly schedule: DoublingSchedule;
  bytesSent = 0;
  get rejectedFrames(): Record<RejectReason, number> {
    return this.rejecter.counts;
  }

  private readonly config: ParsedRingConfig;
  private readonly chunkFloats: number;
  private readonly inbox: RingInbox;
  private readonly pushes = new Map<number, { socket: zmq.Push; sender: SerialSender<Buffer> }>();
  private readonly log: Logger;
  private readonly rejecter: FrameRejecter;
  private readonly links: LinkTokens | undefined;
  private readonly barrier: RingReadyBarrier;
  private readonly stash = new FutureStepStash<DoublingChunk>();
  /** The ring's SIMD add (bit-identical to a JS add): in place for a buffer from `allocate`, through a scratch otherwise. */
  private readonly arenas = new ArenaPool();
  private op: DoublingOperation | undefined;
  private lastStep = -1;
  private closed = false;
  /** Settles when every connection to a partner is up (its handshake succeeded), or one failed. */
  private linksUp: Promise<void> = Promise.resolve();

  /** Binds (or takes) the inbox, connects to every partner and waits for a hello from each partner that sends here. */
  static async connect(config: RingConfig, options: DoublingReducerOptions = {}): Promise<DoublingAllReducer> {
    const c = parseRingConfig(config, options);
    const schedule = doublingSchedule(c.rank, c.worldSize);
    const { curve } = options;
    if (curve && !options.links) {
      options.inbox?.close();
      throw new MnistDdpError('CONFIG_INVALID', 'recursive doubling over CURVE needs link tokens: its inbox admits several peers', {});
    }
    const allowKeys = curve ? schedule.receivesFrom.map((r) => curve.peerKeys[r]!) : [];
    const inbox = options.inbox ?? (await openRingInbox(c.bindAddress ?? c.peers[c.rank] ?? '', {
      chunkBytes: c.chunkBytes ?? DEFAULT_CHUNK_BYTES, ...(options.logger ? { log: options.logger } : {}), ...(options.observer ? { observer: options.observer } : {}),
      ...(curve ? { curve: { keyPair: curve.keyPair, allowKey: allowKeys } } : {}),
    }));
    if (curve) inbox.allow(allowKeys);
    const reducer = new DoublingAllReducer(c, schedule, inbox, options);
    await untilReady(() => reducer.ready(), (keep) => reducer.close(keep), options.signal, options.inbox !== undefined);
    return reducer;
  }

  private constructor(config: ParsedRingConfig, schedule: DoublingSchedule, inbox: RingInbox, options: DoublingReducerOptions) {
    this.config = config;
    this.rank = config.rank;
    this.worldSize = config.worldSize;
    this.generation = config.generation;
    this.schedule = schedule;
    this.chunkFloats = (config.chunkBytes ?? DEFAULT_CHUNK_BYTES) / 4;
    this.log = options.logger ?? componentLogger('doubling', { rank: config.rank, generation: config.generation });
    this.rejecter = new FrameRejecter(config.rank, this.log, options.onRejectedFrame);
    this.links = options.links;
    this.barrier = new RingReadyBarrier(config.rank, config.worldSize, config.generation, config.peers, schedule.receivesFrom);
    this.inbox = inbox;
    this.endpoint = inbox.endpoint;
    const connectTimeout = config.connectTimeoutMs ?? Math.min(DEFAULT_CONNECT_TIMEOUT_MS, config.readyTimeoutMs ?? config.timeoutMs);
    const links: Promise<void>[] = [];
    for (const to of schedule.sendsTo) {
      const serverKey = options.curve?.peerKeys[to];
      const socket = new zmq.Push({
        sendHighWaterMark: HIGH_WATER_MARK, linger: 0, maxMessageSize: FRAME_HEADROOM_BYTES, connectTimeout,
        ...(options.curve && serverKey ? curveClientOptions(options.curve.keyPair, serverKey) : {}),
      });
      this.pushes.set(to, { socket, sender: new SerialSender((frame) => socket.send(frame)) });
      const up = watchFirstConnect(socket, { rank: this.rank, to, address: config.peers[to] ?? '?', generation: this.generation, connectTimeoutMs: connectTimeout },
        (err) => this.barrier.fail(err), () => this.closed);
      up.catch(() => undefined);
      links.push(up);
      socket.connect(config.peers[to] ?? '');
    }
    this.linksUp = Promise.all(links).then(() => undefined);
    this.linksUp.catch(() => undefined);
    void receiveFrames(this.inbox.socket, this.rank, () => this.closed, (parts) => this.onFrame(parts), (lost) => {
      this.barrier.fail(lost);
      if (this.op) this.fail(this.op, lost);
    });
  }

  private ready(): Promise<void> {
    if (this.worldSize === 1) return Promise.resolve();
    const deadline = this.config.readyTimeoutMs ?? this.config.timeoutMs;
    const ready = Promise.all([this.barrier.wait(deadline), linksUpWithin(this.linksUp, deadline, this.rank, this.generation)]).then(() => undefined);
    for (const to of this.schedule.sendsTo) {
      this.sendTo(to, encode({ type: 'doubling-hello', protocolVersion: PROTOCOL_VERSION, generation: this.generation, worldSize: this.worldSize, rank: this.rank, ...this.tokenFor(to) } satisfies DoublingHello));
    }
    return ready;
  }

  allReduce(buf: Float32Array, step: number, opts: AllReduceOptions = {}): Promise<Float32Array> {
    const problem = allReduceCallProblem(this.rank, step, { closed: this.closed, running: this.op?.step, lastStep: this.lastStep });
    if (problem) return Promise.reject(problem);
    this.lastStep = step;
    if (this.worldSize === 1 || buf.length === 0) return Promise.resolve(buf);
    this.stash.noteBuffer(buf.byteLength);
    const timeoutMs = opts.timeoutMs ?? this.config.timeoutMs;
    return new Promise<Float32Array>((resolve, reject) => {
      const op: DoublingOperation = {
        step, buf, at: 0, sent: false, received: new Map(), timeoutMs, resolve, reject,
        timer: setTimeout(() => this.onTimeout(op), timeoutMs),
      };
      this.op = op;
      const { current, dropped } = this.stash.take(step);
      for (const { frame, reason, message } of dropped) this.reject(reason, message, frame);
      for (const frame of current) this.keep(op, frame);
      this.advance(op);
    });
  }

  /** A zeroed buffer in the memory of the SIMD add (sum-arena.ts), which then sums into it in place. */
  allocate(length: number): Float32Array {
    return this.arenas.allocate(length);
  }

  async close(keepInbox = false): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.barrier.fail(new MnistDdpError('PEER_LOST', `rank ${this.rank}: collective closed before it was ready`, { rank: this.rank }));
    if (this.op) this.fail(this.op, new MnistDdpError('PEER_LOST', `rank ${this.rank}: collective closed during step ${this.op.step}`, { rank: this.rank, step: this.op.step }));
    const lingerMs = this.config.closeLingerMs ?? 500;
    // As the ring's close: the last step's last frames get a bounded time to leave, so a partner does not time out.
    await drainWithin(Promise.all([...this.pushes.values()].map((p) => p.sender.drained())), lingerMs);
    for (const { socket } of this.pushes.values()) {
      socket.linger = lingerMs;
      socket.close();
    }
    if (!keepInbox) this.inbox.close();
  }

  private tokenFor(to: number): { token?: Uint8Array } {
    const token = this.links?.send.get(to);
    return token ? { token } : {};
  }

  private chunkCount(length: number): number {
    return Math.max(1, Math.ceil(length / this.chunkFloats));
  }

  /** Works through the schedule as far as the partials received allow; resolves when the last round is done. */
  private advance(op: DoublingOperation): void {
    const rounds = this.schedule.rounds;
    while (op.at < rounds.length) {
      const round = rounds[op.at]!;
      if (!op.sent && round.sendTo !== undefined) this.sendPartial(op, round);
      op.sent = true;
      if (round.receiveFrom !== undefined) {
        const chunks = op.received.get(round.round);
        if (!chunks || chunks.some((c) => c === undefined)) return;
        this.combine(op, round, chunks as Float32Array[]);
        op.received.delete(round.round);
      }
      op.at++;
      op.sent = false;
    }
    clearTimeout(op.timer);
    this.op = undefined;
    op.resolve(op.buf);
  }

  private sendPartial(op: DoublingOperation, round: DoublingRound): void {
    const to = round.sendTo!;
    const n = this.chunkCount(op.buf.length);
    for (let chunk = 0; chunk < n; chunk++) {
      const data = op.buf.subarray(chunk * this.chunkFloats, Math.min(op.buf.length, (chunk + 1) * this.chunkFloats));
      // encode copies `data` into the frame: this rank adds into `buf` as soon as the partner's partial is in.
      this.bytesSent += data.byteLength;
      this.sendTo(to, encode({ type: 'doubling-chunk', generation: this.generation, step: op.step, rank: this.rank, round: round.round, chunk, ...this.tokenFor(to), data } satisfies DoublingChunk));
    }
  }

  private combine(op: DoublingOperation, round: DoublingRound, chunks: readonly Float32Array[]): void {
    const buf = op.buf;
    const arena = round.receiveAs === 'take' ? undefined : this.arenas.arenaFor(buf);
    for (let chunk = 0; chunk < chunks.length; chunk++) {
      const data = chunks[chunk]!;
      const at = chunk * this.chunkFloats;
      if (arena) arena.sumInto(buf.subarray(at, at + data.length), data);
      else buf.set(data, at);
    }
  }

  private sendTo(to: number, frame: Buffer): void {
    const push = this.pushes.get(to);
    if (!push) throw new MnistDdpError('INVARIANT_VIOLATED', `rank ${this.rank} has no socket to rank ${to}`, {});
    push.sender.send(frame).catch((err: Error) => {
      if (!this.closed && this.op) this.fail(this.op, new MnistDdpError('PEER_LOST', `rank ${this.rank} could not send to rank ${to}: ${err.message}`, { missingRank: to }, { cause: err }));
    });
  }

  private onFrame(parts: Buffer[]): void {
    let message: unknown;
    try {
      message = decodeParts(parts);
    } catch (err) {
      return this.reject('malformed', (err as Error).message);
    }
    if (isDoublingChunk(message)) return this.onChunk(message);
    if (isDoublingHello(message)) return this.onHello(message);
    return this.reject('malformed', messageProblem(message) ?? `not a frame of recursive doubling (${(message as { type?: unknown }).type ?? '?'})`);
  }

  /** The frame's generation is this one, it claims a rank that sends to this one, and carries that link's token. */
  private checkOrigin(frame: DoublingHello | DoublingChunk): boolean {
    if (frame.generation !== this.generation) {
      const older = frame.generation < this.generation;
      this.reject(older ? 'stale' : 'unexpected', `frame from generation ${frame.generation}, this collective is generation ${this.generation}${older ? '' : '; this rank must rejoin'}`, frame);
      return false;
    }
    if (!this.schedule.receivesFrom.includes(frame.rank)) {
      this.reject('unexpected', `frame from rank ${frame.rank}, which never sends to rank ${this.rank} (partners: ${this.schedule.receivesFrom.join(', ')})`, frame);
      return false;
    }
    const expected = this.links?.receive.get(frame.rank);
    if (this.links && (!expected || !frame.token || frame.token.length !== expected.length || !timingSafeEqual(frame.token, expected))) {
      this.reject('unexpected', `frame claims rank ${frame.rank} without that link's token: not sent by rank ${frame.rank}`, frame);
      return false;
    }
    return true;
  }

  private onHello(hello: DoublingHello): void {
    const mismatch = helloMismatch(hello, hello.rank, this.rank, this.worldSize);
    if (mismatch) {
      this.reject('unexpected', mismatch.message, hello);
      this.barrier.fail(mismatch);
      return;
    }
    if (!this.checkOrigin(hello)) return;
    if (this.barrier.hear(hello.rank).duplicate) this.reject('duplicate', `second hello from rank ${hello.rank}`, hello);
  }

  private onChunk(frame: DoublingChunk): void {
    if (!this.checkOrigin(frame)) return;
    const op = this.op;
    if (op && frame.step === op.step) {
      this.keep(op, frame);
      return this.advance(op);
    }
    if (frame.step <= this.lastStep) return this.reject('stale', `frame for step ${frame.step} arrived after this rank reached step ${this.lastStep}`, frame);
    const refused = this.stash.offer(frame, this.lastStep);
    if (refused !== undefined) this.reject('unexpected', refused, frame);
  }

  /** Files a chunk of the current step under its round, after checking it is one this rank expects from that rank. */
  private keep(op: DoublingOperation, frame: DoublingChunk): void {
    const round = this.schedule.rounds.find((r) => r.round === frame.round);
    if (!round || round.receiveFrom !== frame.rank) return this.reject('unexpected', `rank ${this.rank} receives nothing from rank ${frame.rank} in round ${frame.round}`, frame);
    if (this.schedule.rounds.indexOf(round) < op.at) return this.reject('duplicate', `round ${frame.round} of step ${frame.step} is already done`, frame);
    const n = this.chunkCount(op.buf.length);
    if (frame.chunk >= n) return this.reject('unexpected', `a ${op.buf.length}-float buffer has ${n} chunk(s), got chunk ${frame.chunk}`, frame);
    const expected = Math.min(op.buf.length, (frame.chunk + 1) * this.chunkFloats) - frame.chunk * this.chunkFloats;
    if (frame.data.length !== expected) {
      return this.reject('unexpected', `chunk ${frame.chunk} of round ${frame.round} has ${frame.data.length} floats, expected ${expected} (do all ranks reduce ${op.buf.length} floats?)`, frame);
    }
    let chunks = op.received.get(frame.round);
    if (!chunks) op.received.set(frame.round, (chunks = new Array<Float32Array | undefined>(n).fill(undefined)));
    if (chunks[frame.chunk]) return this.reject('duplicate', `chunk ${frame.chunk} of round ${frame.round} arrived twice`, frame);
    chunks[frame.chunk] = frame.data;
    op.timer.refresh();
  }

  private fail(op: DoublingOperation, err: Error): void {
    clearTimeout(op.timer);
    if (this.op === op) this.op = undefined;
    op.reject(err);
  }

  private onTimeout(op: DoublingOperation): void {
    const round = this.schedule.rounds[op.at];
    const partner = round?.receiveFrom ?? round?.sendTo ?? -1;
    const chunks = op.received.get(round?.round ?? -1);
    const missing = chunks ? chunks.filter((c) => c === undefined).length : this.chunkCount(op.buf.length);
    this.fail(op, new MnistDdpError(
      'PEER_TIMEOUT',
      `rank ${this.rank} waited ${op.timeoutMs} ms for rank ${partner} (${this.config.peers[partner] ?? '?'}) in round ${round?.round ?? '?'} of step ${op.step}; ` +
        `${missing} chunk(s) missing. Rank ${partner} is dead, stalled, or itself waiting on another partner.`,
      { missingRank: partner, rank: this.rank, step: op.step, timeoutMs: op.timeoutMs, round: round?.round, missingFrames: missing },
    ));
  }

  private reject(reason: RejectReason, message: string, frame?: RejectedFrame): void {
    this.rejecter.reject(reason, message, frame);
  }

}
