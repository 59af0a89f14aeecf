import { hostname, networkInterfaces } from 'node:os';
import { endpointHost, isLoopbackHost, isWildcardHost, localAddressToward } from '../shared/wire/endpoints.js';

export interface AdvertisedAddress {
  /** Where ring peers dial this worker's inbox. */
  host: string;
  /**
   * The local address of this worker's route to the coordinator (undefined when unknown). The coordinator compares
   * it across workers: the same `via` means the same host, which is what makes a loopback inbox reachable.
   */
  via: string | undefined;
  /** How `host` was chosen, for the log line. */
  source: 'advertise-host' | 'bind-host' | 'route to the coordinator' | 'loopback coordinator' | 'first external interface' | 'hostname';
  /** Why the route could not be used, when it could not. */
  problem?: string;
}

/**
 * Which address to advertise for the ring inbox (issue #16). In order: --advertise-host; a --bind-host that names one
 * interface (the inbox listens nowhere else); the address of the interface that routes to the coordinator (the
 * network the run uses, not whichever interface is listed first — a docker0 ahead of eth0 broke multi-host runs).
 * Only without a route (the link is down at start-up) does it fall back to the first external IPv4, then the hostname.
 */
export async function resolveAdvertisedAddress(o: { coordinator: string; bindHost: string; advertiseHost?: string | undefined }): Promise<AdvertisedAddress> {
  const coordinatorHost = endpointHost(o.coordinator);
  let via: string | undefined;
  let problem: string | undefined;
  if (coordinatorHost === undefined) via = '127.0.0.1'; // ipc://: the coordinator is on this host
  else {
    try {
      via = await localAddressToward(coordinatorHost, Number(/:(\d+)$/.exec(o.coordinator)?.[1] ?? 5555));
    } catch (err) {
      problem = `no route to the coordinator host ${coordinatorHost}: ${(err as Error).message}`;
    }
  }
  if (o.advertiseHost) return { host: o.advertiseHost, via, source: 'advertise-host', problem };
  if (!isWildcardHost(o.bindHost)) return { host: o.bindHost, via, source: 'bind-host', problem };
  if (via) return { host: via, via, source: 'route to the coordinator' };
  if (coordinatorHost === undefined || isLoopbackHost(coordinatorHost)) return { host: '127.0.0.1', via, source: 'loopback coordinator', problem };
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return { host: a.address, via, source: 'first external interface', problem };
  }
  return { host: hostname(), via, source: 'hostname', problem };
}
