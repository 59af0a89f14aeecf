import { networkInterfaces } from 'node:os';
import { endpointHost, isLoopbackHost, isWildcardHost } from '../shared/wire/endpoints.js';

/** What the check needs of a ring member. */
export interface InboxOwner {
  id: number;
  rank: number;
  pid: number;
  /** The local address of its route to the coordinator (hello `via`); undefined when it did not say. */
  via: string | undefined;
}

export interface UnreachableInbox<W extends InboxOwner> {
  worker: W;
  endpoint: string;
  /** Why its ring predecessor could never dial it, and what to do: sent to the worker and logged. */
  reason: string;
}

/** Addresses of this machine's interfaces: a worker whose route to the coordinator leaves from one is on this host. */
export function localAddresses(): Set<string> {
  const set = new Set<string>();
  for (const list of Object.values(networkInterfaces())) for (const a of list ?? []) set.add(a.address);
  return set;
}

/**
 * The inboxes of a ring about to form that some member could never dial (issue #16), decided from the addresses alone
 * before anyone tries: a wildcard (0.0.0.0) is no address to dial, and a loopback address is reachable only from the
 * same host, so it cannot stand in a ring with a member on another host. Hosts are told apart by `via`: the same
 * address, or any address of the coordinator's own host (loopback included), means the same machine. Members that
 * did not say their `via` are not judged.
 */
export function unreachableInboxes<W extends InboxOwner>(ring: readonly W[], endpoints: ReadonlyMap<number, string>, coordinatorAddresses: ReadonlySet<string> = localAddresses()): UnreachableInbox<W>[] {
  const hostOf = (w: W): string | undefined => (w.via === undefined ? undefined : isLoopbackHost(w.via) || coordinatorAddresses.has(w.via) ? 'coordinator host' : w.via);
  const found: UnreachableInbox<W>[] = [];
  for (const w of ring) {
    const endpoint = endpoints.get(w.id);
    const host = endpoint === undefined ? undefined : endpointHost(endpoint);
    if (endpoint === undefined || host === undefined) continue;
    if (isWildcardHost(host)) {
      found.push({ worker: w, endpoint, reason: `its ring inbox is advertised at ${endpoint}, a wildcard that no peer can dial; start the worker with --advertise-host set to its address on the run's network` });
      continue;
    }
    if (!isLoopbackHost(host) || hostOf(w) === undefined) continue;
    const elsewhere = ring.find((m) => m !== w && hostOf(m) !== undefined && hostOf(m) !== hostOf(w));
    if (elsewhere) {
      found.push({
        worker: w, endpoint,
        reason: `its ring inbox is advertised at the loopback address ${endpoint}, but rank ${elsewhere.rank} (worker ${elsewhere.id}, pid ${elsewhere.pid}) runs on another host ` +
          `(it reaches the coordinator from ${elsewhere.via}) and could never dial it; start this worker with --coordinator set to the coordinator's address on the run's network ` +
          `(it then advertises its own address there) or with --advertise-host`,
      });
    }
  }
  return found;
}
