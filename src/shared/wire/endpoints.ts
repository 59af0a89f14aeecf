/**
 * ZeroMQ tcp:// endpoints as addresses: which host one names, and whether a peer on another machine can dial it
 * (issue #16: a ring across hosts needs every inbox advertised at an address its predecessor can reach).
 */
import { createSocket } from 'node:dgram';
import { lookup } from 'node:dns/promises';

export { isLoopbackHost } from '../security/transport.js';

const TCP_ENDPOINT = /^tcp:\/\/(?:\[([^\]]+)\]|([^:/]+)):(\d+|\*)$/;

/** The host of a tcp:// endpoint without IPv6 brackets (`tcp://[::1]:5555` → `::1`); undefined for ipc:// and inproc://. */
export function endpointHost(endpoint: string): string | undefined {
  const m = TCP_ENDPOINT.exec(endpoint);
  return m ? (m[1] ?? m[2]) : undefined;
}

/** `endpoint` with its host replaced (an inbox bound on 0.0.0.0 advertised at the address peers dial). */
export function withHost(endpoint: string, host: string): string {
  const bracketed = host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
  return endpoint.replace(/^tcp:\/\/(?:\[[^\]]+\]|[^:/]+):/, `tcp://${bracketed}:`);
}

/** An address that means "every interface" when bound, and nothing a peer can dial. */
export function isWildcardHost(host: string): boolean {
  return host === '0.0.0.0' || host === '::' || host === '[::]' || host === '*' || host === '';
}

/**
 * The source address this host would use for a packet to `host`: the address of the interface its route leaves
 * by. A UDP socket connect()ed to the destination makes the kernel choose route and source address; nothing is sent.
 * Rejects when there is no route (e.g. the link is down and there is no default route).
 */
export async function localAddressToward(host: string, port: number): Promise<string> {
  const { address, family } = await lookup(host);
  const socket = createSocket(family === 6 ? 'udp6' : 'udp4');
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.connect(port, address, () => resolve());
    });
    // Without a route Linux still "connects" the socket, leaving it bound to the wildcard address.
    const local = socket.address().address;
    if (isWildcardHost(local)) throw new Error(`no route to ${host}`);
    return local;
  } finally {
    socket.close();
  }
}
