import * as zmq from 'zeromq';
import type { Logger } from '../../shared/core/log.js';
import { z85Decode, type CurveKeyPair } from '../../shared/security/keys.js';
import { curveServerOptions, observeTransport, refusalLogger, type TransportObserver } from '../../shared/security/transport.js';
import { registerZapDomain, uniqueZapDomain, type ZapRegistration } from '../../shared/security/zap.js';
import { ringFrameLimit } from '../../shared/wire/frame-limits.js';
import { MnistDdpError } from '../../shared/core/errors.js';

/** Bounds queued frames per socket; one all-reduce keeps at most ~2 buffers' worth of chunks in flight. */
export const HIGH_WATER_MARK = 10_000;

/**
 * Chunk size, a trade-off between pipelining and per-frame cost. Smaller chunks let reducing and forwarding overlap
 * the transfer sooner; every chunk pays a fixed cost (a ZeroMQ message, thread wake-ups on both sides, a promise).
 * At 1 MiB an 8 MiB 2-rank all-reduce still has 4 chunks per segment to pipeline, and the fixed cost is paid 4x less
 * often than at 256 KiB; larger rings keep more pipelining than at 2 MiB. The cnn gradient (133 KiB) is one chunk per
 * segment at any of these sizes. `npx tsx bench/allreduce.ts --chunk-kib N` compares sizes.
 */
export const DEFAULT_CHUNK_BYTES = 1024 * 1024;

/**
 * A ring inbox's CURVE identity and the clients it admits: this rank's predecessor in the ring, or the partners that
 * send to it in recursive doubling.
 */
export interface InboxCurve {
  /** This worker's ring keypair (made at start-up; its public half went to the coordinator in hello). */
  keyPair: CurveKeyPair;
  /** The senders' ring public keys (Z85). */
  allowKey: string | readonly string[];
}

export interface InboxOptions {
  curve?: InboxCurve;
  /** Largest chunk the left neighbour will send; sets the inbound frame limit. Default DEFAULT_CHUNK_BYTES. */
  chunkBytes?: number;
  log?: Logger;
  observer?: TransportObserver;
  /**
   * Bind a port in this inclusive range instead of the one in `bindAddress` (whose port must then be `*`): a
   * firewall between hosts can open just these (issue #16).
   */
  ports?: { first: number; last: number };
}

/**
 * A bound PULL socket. Bind to `tcp://host:*` to let the OS pick a port; `endpoint` is the address to advertise.
 * With CURVE it admits only the predecessor's key (ZAP), so every frame it delivers came from that peer, whatever
 * the frame says about itself (issue #15). Admitting several keys (recursive doubling) leaves binding each frame to
 * its sender to the frame's link token (doubling-allreduce.ts).
 */
export interface RingInbox {
  readonly endpoint: string;
  readonly socket: zmq.Pull;
  /** Frames above this many bytes drop the sender's connection (frame-limits.ts). */
  readonly maxMessageSize: number;
  /** Whether CURVE secures this inbox. */
  readonly curve: boolean;
  /** Admit `publicKey` (Z85; several for recursive doubling) instead, for the collective formed next; CURVE inboxes only. */
  allow(publicKey: string | readonly string[]): void;
  close(): void;
}

export async function openRingInbox(bindAddress: string, options: InboxOptions = {}): Promise<RingInbox> {
  const { curve, log } = options;
  const maxMessageSize = ringFrameLimit(options.chunkBytes ?? DEFAULT_CHUNK_BYTES);
  let zap: ZapRegistration | undefined;
  let security = {};
  let allow = (_publicKey: string | readonly string[]): void => undefined;
  if (curve) {
    const onRefused = log ? refusalLogger('ring inbox', log) : undefined;
    const policy = (allowKey: string | readonly string[]) => {
      const allowed = (typeof allowKey === 'string' ? [allowKey] : allowKey).map(z85Decode);
      return { allows: (key: Buffer) => allowed.some((k) => key.equals(k)), ...(onRefused ? { onRefused } : {}) };
    };
    zap = await registerZapDomain(uniqueZapDomain('ring'), policy(curve.allowKey));
    security = curveServerOptions(curve.keyPair, zap.domain);
    const registration = zap;
    allow = (publicKey) => registration.setPolicy(policy(publicKey));
  }
  const socket = new zmq.Pull({ receiveHighWaterMark: HIGH_WATER_MARK, linger: 0, maxMessageSize, ...security });
  if (log) observeTransport(socket, 'ring inbox', log, options.observer ?? {});
  const close = (): void => {
    if (!socket.closed) socket.close();
    void zap?.close();
  };
  try {
    if (options.ports) await bindInRange(socket, bindAddress, options.ports);
    else await socket.bind(bindAddress);
  } catch (err) {
    close();
    throw err;
  }
  return {
    endpoint: socket.lastEndpoint ?? bindAddress,
    socket,
    maxMessageSize,
    curve: curve !== undefined,
    allow,
    close,
  };
}

/**
 * Binds the first free port of `ports`, trying them from a random one on: workers sharing a host then rarely try the
 * same port at the same moment. A port in use is skipped; any other bind error is thrown as it is.
 */
async function bindInRange(socket: zmq.Pull, bindAddress: string, ports: { first: number; last: number }): Promise<void> {
  const prefix = /^(tcp:\/\/.+):\*$/.exec(bindAddress)?.[1];
  if (!prefix) throw new MnistDdpError('CONFIG_INVALID', `a ring port range needs a bind address ending in :* (got ${bindAddress})`, { bindAddress });
  const count = ports.last - ports.first + 1;
  const start = Math.floor(Math.random() * count);
  for (let i = 0; i < count; i++) {
    const port = ports.first + ((start + i) % count);
    try {
      await socket.bind(`${prefix}:${port}`);
      return;
    } catch (err) {
      if ((err as { code?: string }).code !== 'EADDRINUSE') throw err;
    }
  }
  throw new MnistDdpError('PORT_RANGE_EXHAUSTED', `every port of --ring-ports ${ports.first}-${ports.last} on ${prefix} is in use; widen the range (each worker on a host needs one)`, { ...ports });
}
