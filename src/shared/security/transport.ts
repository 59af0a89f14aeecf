import type * as zmq from 'zeromq';
import { MnistDdpError } from '../core/errors.js';
import type { Logger } from '../core/log.js';
import { loadCoordinatorKeys, loadWorkerKeys, type CoordinatorKeys, type CurveKeyPair, type WorkerKeys } from './keys.js';

/**
 * How a process secures its ZeroMQ sockets. `curve`: CURVE encryption with mutual authentication (keys from a key
 * directory); `plaintext`: none, allowed only with --insecure or when every address is loopback, and then logged as
 * a warning once.
 */
export type CoordinatorSecurity = { readonly mode: 'curve'; readonly keys: CoordinatorKeys } | { readonly mode: 'plaintext' };
export type WorkerSecurity = { readonly mode: 'curve'; readonly keys: WorkerKeys } | { readonly mode: 'plaintext' };

export interface SecuritySettings {
  /** A key directory (`mnist-ddp keygen --out DIR`); absent: plaintext, if allowed. */
  keys?: string | undefined;
  /** Plaintext on any address, explicitly. */
  insecure: boolean;
}

/** True for addresses only this machine can reach: ipc://, inproc://, and tcp:// on 127.0.0.0/8, ::1 or localhost. */
export function isLoopbackEndpoint(endpoint: string): boolean {
  if (/^(ipc|inproc):\/\//.test(endpoint)) return true;
  const host = /^tcp:\/\/(\[[^\]]+\]|[^:/]+)/.exec(endpoint)?.[1];
  return host !== undefined && isLoopbackHost(host);
}

export function isLoopbackHost(host: string): boolean {
  return /^127\.\d+\.\d+\.\d+$/.test(host) || host === 'localhost' || host === '::1' || host === '[::1]';
}

function plaintext(settings: SecuritySettings, endpoints: readonly string[], role: string, log: Logger): { readonly mode: 'plaintext' } {
  const exposed = endpoints.filter((e) => !isLoopbackEndpoint(e));
  if (settings.insecure) {
    log.warn({ endpoints }, `--insecure: the ${role}'s ZeroMQ traffic is neither authenticated nor encrypted; anyone who reaches ${endpoints.join(', ')} can join the run or forge gradients`);
  } else if (exposed.length > 0) {
    throw new MnistDdpError('TRANSPORT_INSECURE',
      `the ${role} would listen or connect on ${exposed.join(', ')} without keys: anyone on that network could join the run and forge gradients. ` +
      `Create keys with 'mnist-ddp keygen --out DIR' and pass --keys DIR (or MNIST_DDP_KEYS=DIR), or pass --insecure to run without them`,
      { endpoints: exposed });
  } else {
    log.warn({ endpoints }, `no --keys: the ${role}'s ZeroMQ traffic is unencrypted (every address is loopback); pass --keys DIR for CURVE`);
  }
  return { mode: 'plaintext' };
}

/** The coordinator's security: CURVE with keys, else plaintext if `bind` is loopback or --insecure was given. */
export function coordinatorSecurity(settings: SecuritySettings, bind: string, log: Logger): CoordinatorSecurity {
  if (settings.keys) return { mode: 'curve', keys: loadCoordinatorKeys(settings.keys) };
  return plaintext(settings, [bind], 'coordinator', log);
}

/** A worker's security over its control connection and ring sockets (`endpoints`: the coordinator and its inbox). */
export function workerSecurity(settings: SecuritySettings, endpoints: readonly string[], log: Logger): WorkerSecurity {
  if (settings.keys) return { mode: 'curve', keys: loadWorkerKeys(settings.keys) };
  return plaintext(settings, endpoints, 'worker', log);
}

/** Options of a CURVE server socket whose clients `zapDomain`'s policy admits; refuses everyone if no handler runs. */
export function curveServerOptions(keyPair: CurveKeyPair, zapDomain: string): Partial<zmq.SocketOptions<zmq.Socket>> {
  return { curveServer: true, curveSecretKey: keyPair.secretKey, curvePublicKey: keyPair.publicKey, zapDomain, zapEnforceDomain: true };
}

/** Options of a CURVE client socket that talks only to the server holding `serverKey`'s secret. */
export function curveClientOptions(keyPair: CurveKeyPair, serverKey: string): Partial<zmq.SocketOptions<zmq.Socket>> {
  return { curveServer: false, curvePublicKey: keyPair.publicKey, curveSecretKey: keyPair.secretKey, curveServerKey: serverKey };
}

/** Why a handshake with a would-be peer failed (the `reason` label of mnistddp_auth_refused_total). */
export const AUTH_REFUSALS = ['key-not-allowed', 'no-curve', 'bad-handshake'] as const;
export type AuthRefusal = (typeof AUTH_REFUSALS)[number];

export interface TransportObserver {
  /** A peer's handshake was refused (counted once per attempt; peers retry every 100 ms or so). */
  onAuthRefused?: (reason: AuthRefusal) => void;
  /**
   * ZeroMQ dropped an established connection: the peer went away, or it sent a frame above maxMessageSize (libzmq
   * drops such a frame with its connection and reports no reason).
   */
  onConnectionDropped?: () => void;
}

/**
 * Counts what a server socket's monitor reports about refused handshakes and dropped connections, and logs each kind
 * of refusal once per socket (ZAP refusals, which carry the peer's address, are logged once per address by the
 * socket's ZAP policy instead). Ends with the socket.
 */
export function observeTransport(socket: zmq.Socket, name: string, log: Logger, observer: TransportObserver): void {
  const logged = new Set<string>();
  const refused = (reason: AuthRefusal, detail: string): void => {
    observer.onAuthRefused?.(reason);
    if (reason === 'key-not-allowed' || logged.has(reason)) return;
    logged.add(reason);
    log.warn({ socket: name, reason, detail }, `${name}: refused a peer's handshake (${reason}: ${detail}); further refusals of this kind are only counted (mnistddp_auth_refused_total)`);
  };
  const events = socket.events;
  events.on('handshake:error:auth', () => refused('key-not-allowed', 'its public key is not allowed'));
  events.on('handshake:error:protocol', (e) => refused(e.error.code === 'ERR_ZMTP_MECHANISM_MISMATCH' ? 'no-curve' : 'bad-handshake', e.error.code ?? e.error.message));
  events.on('handshake:error:other', (e) => refused('bad-handshake', e.error.message));
  events.on('disconnect', () => observer.onConnectionDropped?.());
}

/**
 * A ZAP refusal logger: one line per peer address, however often that peer retries (issue #15), naming the key so
 * an operator can add it to the allow-list if it belongs there.
 */
export function refusalLogger(name: string, log: Logger): (address: string, publicKey: string) => void {
  const seen = new Set<string>();
  return (address, publicKey) => {
    if (seen.has(address)) return;
    seen.add(address);
    log.warn({ socket: name, address, publicKey }, `${name}: refused a CURVE client from ${address} whose key ${publicKey} is not allowed; further attempts from ${address} are only counted`);
  };
}
