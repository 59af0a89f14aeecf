import { z } from 'zod';
import { MnistDdpError } from '../../shared/core/errors.js';
import type { Logger } from '../../shared/core/log.js';
import type { CurveKeyPair } from '../../shared/security/keys.js';
import type { TransportObserver } from '../../shared/security/transport.js';
import { ringFrameLimit } from '../../shared/wire/frame-limits.js';
import { COMPRESS_MODES } from '../../shared/wire/half-float.js';
import type { RejectReason } from '../../shared/wire/reject-reasons.js';
import { DEFAULT_CHUNK_BYTES, type RingInbox } from './inbox.js';

/**
 * A connect to a live inbox on a LAN answers within milliseconds; 3 s still covers one lost SYN (retried after 1 s)
 * and fails well before the 10 s start-up deadline when the address leads nowhere.
 */
export const DEFAULT_CONNECT_TIMEOUT_MS = 3000;

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
    /**
     * How long one TCP connect to the right neighbour may take before it counts as failed; default the smaller of
     * DEFAULT_CONNECT_TIMEOUT_MS and the start-up deadline. Before the ring is ready a failed connect ends the
     * start-up at once (PEER_UNREACHABLE).
     */
    connectTimeoutMs: z.number().int().positive().optional(),
    chunkBytes: z.number().int().min(4).multipleOf(4).optional(),
    /** Where this rank's inbox binds when it differs from peers[rank] (e.g. tcp://0.0.0.0:6001). */
    bindAddress: endpoint.optional(),
    /** How long close() lets already-queued frames reach the right neighbour before dropping them. */
    closeLingerMs: z.number().int().nonnegative().optional(),
    /** A scavenge after every this many bytes received (young-gc.ts). Default 8 MiB; 0 turns it off (benchmarks compare). */
    scavengeEveryBytes: z.number().int().nonnegative().optional(),
    /**
     * 16-bit gradients on the wire, with error feedback (chunk-compressor.ts); every rank must use the same mode
     * (HANDSHAKE_MISMATCH at start-up otherwise).
     */
    compress: z.enum(COMPRESS_MODES).default('none'),
  })
  .strict()
  .superRefine((c, ctx) => {
    if (c.rank >= c.worldSize) ctx.addIssue({ code: 'custom', path: ['rank'], message: `is ${c.rank}, must be below worldSize ${c.worldSize}` });
    if (c.peers.length !== c.worldSize)
      ctx.addIssue({ code: 'custom', path: ['peers'], message: `has ${c.peers.length} endpoints, expected one per rank (${c.worldSize})` });
  });

/** One rank's place in one generation of the ring, as the caller gives it. */
export type RingConfig = z.input<typeof ringConfigSchema>;
/** The same, validated. */
export type ParsedRingConfig = z.output<typeof ringConfigSchema>;

/** CURVE on the ring: this rank's keypair, and every rank's public key by rank (from the coordinator's `ring`). */
export interface RingCurve {
  keyPair: CurveKeyPair;
  peerKeys: readonly string[];
}

export interface RingReducerOptions {
  logger?: Logger;
  /**
   * Use an inbox opened beforehand (e.g. to advertise an OS-chosen port); the reducer owns it once connect()
   * succeeds, and closes it with itself. An invalid config closes it; a failed start-up leaves it to the caller.
   */
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
  /**
   * Aborting it during connect() ends the start-up barrier at once (PEER_LOST) instead of at its deadline: the
   * coordinator announced a new generation (issue #14).
   */
  signal?: AbortSignal;
}

/**
 * Validates `config` and how it fits `options` (CURVE keys per rank, an inbox opened beforehand); throws
 * CONFIG_INVALID naming the offending key. Closes `options.inbox` when it throws: the reducer owns it.
 */
export function parseRingConfig(config: RingConfig, options: RingReducerOptions): ParsedRingConfig {
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
  const { curve, inbox } = options;
  const problem = curve && curve.peerKeys.length !== c.worldSize
    ? `ring curve.peerKeys has ${curve.peerKeys.length} keys, expected one per rank (${c.worldSize})`
    : inbox && inbox.curve !== (curve !== undefined)
      ? `the inbox was opened ${inbox.curve ? 'with' : 'without'} CURVE but the ring ${curve ? 'uses' : 'does not use'} it`
      : inbox && inbox.maxMessageSize < ringFrameLimit(chunkBytes)
        ? `chunkBytes ${chunkBytes} exceeds what the inbox accepts (${inbox.maxMessageSize} bytes per frame); open it with chunkBytes`
        : undefined;
  if (problem) {
    inbox?.close();
    throw new MnistDdpError('CONFIG_INVALID', problem, {});
  }
  return c;
}
