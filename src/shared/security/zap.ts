import * as zmq from 'zeromq';
import { z85Encode } from './keys.js';

/**
 * ZAP (ZeroMQ RFC 27): libzmq asks the socket bound at this inproc address, in the same context, whether to accept
 * each CURVE client. One handler serves the whole process; each CURVE server socket gets its own ZAP domain, so the
 * control ROUTER (the allow-list) and each ring inbox (its predecessor's key only) keep separate policies.
 * Every CURVE server socket also sets zapEnforceDomain: without a handler libzmq then refuses clients, instead of
 * admitting any key (its default for CURVE without ZAP).
 */
const ZAP_ENDPOINT = 'inproc://zeromq.zap.01';

export interface ZapPolicy {
  /** Whether the client holding this raw 32-byte public key may connect. */
  allows(publicKey: Buffer): boolean;
  /** Called for each refused client: its IP address and Z85 public key. */
  onRefused?(address: string, publicKey: string): void;
}

export interface ZapRegistration {
  readonly domain: string;
  /** Changes who is admitted from now on (connections already made are not re-checked). */
  setPolicy(policy: ZapPolicy): void;
  /** Unregisters the domain at once; the process's handler closes HANDLER_GRACE_MS after its last domain does. */
  close(): Promise<void>;
}

/**
 * How long the handler outlives its last domain. libzmq 4.3.5 aborts (`pipe.cpp:355`, `_state == term_ack_sent`)
 * or crashes when the ZAP socket closes while a CURVE socket that used it still tears its sessions down on
 * ZeroMQ's own threads: both ends of each session's inproc ZAP pipe then terminate at once. That teardown cannot be
 * observed from here (libzmq reports no event for it), so the handler waits this long after its last domain.
 * `bench/zap-teardown.ts` reproduces the crash with an immediate close (bench/RESULTS.md). The grace also lets the
 * next generation's sockets reuse the handler instead of rebinding it.
 */
const HANDLER_GRACE_MS = 1000;

const domains = new Map<string, ZapPolicy>();
let handler: zmq.Router | undefined;
let starting: Promise<void> | undefined;
let stopping: Promise<void> | undefined;
let closeTimer: NodeJS.Timeout | undefined;
let nextDomain = 0;

/** Unique per process: a domain is never reused, so a late request for a closed socket meets no policy. */
export function uniqueZapDomain(prefix: string): string {
  return `mnist-ddp/${prefix}/${process.pid}/${++nextDomain}`;
}

async function startHandler(): Promise<void> {
  await stopping;
  const socket = new zmq.Router({ linger: 0 });
  await socket.bind(ZAP_ENDPOINT);
  handler = socket;
  void serve(socket);
}

async function serve(socket: zmq.Router): Promise<void> {
  try {
    for await (const frames of socket) {
      // [routing id, empty, version, request id, domain, address, identity, mechanism, credentials...]
      const [id, empty, version, requestId, domain, address, , mechanism, key] = frames;
      if (!id || !empty || !version || !requestId) continue;
      const policy = domain ? domains.get(domain.toString()) : undefined;
      const curve = mechanism?.toString() === 'CURVE' && key?.length === 32;
      const ok = version.toString() === '1.0' && curve && policy !== undefined && policy.allows(key);
      if (!ok && policy && curve) policy.onRefused?.(address?.toString() ?? '?', z85Encode(key));
      const userId = ok ? z85Encode(key) : '';
      await socket.send([id, empty, Buffer.from('1.0'), requestId, Buffer.from(ok ? '200' : '400'), Buffer.from(ok ? 'OK' : 'key not allowed'), Buffer.from(userId), Buffer.alloc(0)]);
    }
  } catch {
    // Closed (last domain unregistered): libzmq refuses CURVE clients until a handler is bound again.
  }
}

/**
 * Registers a policy under `domain` (a socket's zapDomain), binding the process's ZAP handler first if needed.
 * The handler closes a grace period after its last domain does, so it never keeps the process alive on its own.
 */
export async function registerZapDomain(domain: string, policy: ZapPolicy): Promise<ZapRegistration> {
  domains.set(domain, policy);
  clearTimeout(closeTimer);
  closeTimer = undefined;
  try {
    while (!handler) {
      starting ??= startHandler().finally(() => (starting = undefined));
      await starting;
    }
  } catch (err) {
    domains.delete(domain);
    throw err;
  }
  let closed = false;
  return {
    domain,
    setPolicy: (next) => {
      if (!closed) domains.set(domain, next);
    },
    close: () => {
      if (closed) return Promise.resolve();
      closed = true;
      domains.delete(domain);
      if (domains.size === 0 && !closeTimer) closeTimer = setTimeout(closeIdleHandler, HANDLER_GRACE_MS);
      return Promise.resolve();
    },
  };
}

/** Closes the handler if no domain was registered during the grace period (see HANDLER_GRACE_MS). */
function closeIdleHandler(): void {
  closeTimer = undefined;
  if (domains.size > 0 || !handler || starting) return;
  const socket = handler;
  handler = undefined;
  // unbind before close: close alone frees the inproc name later, on ZeroMQ's reaper thread, and a quick
  // re-registration would then fail with EADDRINUSE.
  stopping = socket.unbind(ZAP_ENDPOINT).catch(() => undefined).then(() => socket.close());
}
