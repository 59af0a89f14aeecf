import { Counter, type Registry } from 'prom-client';
import { METRIC_PREFIX } from './labels.js';
import { AUTH_REFUSALS, type AuthRefusal, type TransportObserver } from '../security/transport.js';

/** What a process's ZeroMQ server sockets report: refused handshakes and dropped connections (issue #15). */
export interface TransportMetrics extends Required<TransportObserver> {
  readonly authRefused: Counter<'reason'>;
  readonly connectionsDropped: Counter;
}

export function createTransportMetrics(registry: Registry): TransportMetrics {
  const registers = [registry];
  const authRefused = new Counter({
    name: `${METRIC_PREFIX}auth_refused_total`,
    help: 'Handshakes this process refused: key-not-allowed (CURVE key not on the allow-list, or not the ring predecessor), no-curve (a peer without keys), bad-handshake (wrong server key, garbage).',
    labelNames: ['reason'] as const,
    registers,
  });
  for (const reason of AUTH_REFUSALS) authRefused.inc({ reason }, 0);
  const connectionsDropped = new Counter({
    name: `${METRIC_PREFIX}connections_dropped_total`,
    help: 'Established ZeroMQ connections to this process that ended: a peer that went away, or one that sent a frame above the socket\'s maxMessageSize (ZeroMQ drops the frame with the connection).',
    registers,
  });
  return {
    authRefused,
    connectionsDropped,
    onAuthRefused: (reason: AuthRefusal) => authRefused.inc({ reason }),
    onConnectionDropped: () => connectionsDropped.inc(),
  };
}
