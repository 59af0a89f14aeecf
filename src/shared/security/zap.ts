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
  close(): Promise<void>;
}

const domains = new Map<string, ZapPolicy>();
let handler: zmq.Router | undefined;
let starting: Promise<void> | undefined;
let stopping: Promise<void> | undefined;
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
 * The handler closes when its last domain does, so it never keeps the process alive on its own.
 */
export async function registerZapDomain(domain: string, policy: ZapPolicy): Promise<ZapRegistration> {
  domains.set(domain, policy);
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
    close: async () => {
      if (closed) return;
      closed = true;
      domains.delete(domain);
      if (domains.size > 0 || !handler || starting) return;
      const socket = handler;
      handler = undefined;
      // unbind before close: close alone frees the inproc name later, on ZeroMQ's reaper thread, and a quick
      // re-registration would then fail with EADDRINUSE.
      stopping = socket.unbind(ZAP_ENDPOINT).catch(() => undefined).then(() => socket.close());
      await stopping;
    },
  };
}
