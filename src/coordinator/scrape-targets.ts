import { hostname, networkInterfaces } from 'node:os';
import { endpointHost, isLoopbackHost, isWildcardHost, localAddressToward } from '../shared/wire/endpoints.js';
import type { WorkerRecord } from './membership.js';
import type { ScrapeTarget } from './targets-file.js';

/**
 * Where a Prometheus scrapes the coordinator's /metrics (issue #16). Bound to one interface: that address. Bound to
 * every interface (0.0.0.0): the --bind address when it names one non-loopback interface, else this host's address
 * on the route to a remote worker (the run's network, which a Prometheus beside the workers also reaches), else the
 * first external IPv4, else the hostname. Never 127.0.0.1 for a wildcard bind: other hosts cannot scrape that.
 */
export async function coordinatorScrapeHost(metricsHost: string, bind: string, workers: readonly Pick<WorkerRecord, 'via'>[]): Promise<string> {
  if (!isWildcardHost(metricsHost)) return metricsHost;
  const bindHost = endpointHost(bind);
  if (bindHost !== undefined && !isWildcardHost(bindHost) && !isLoopbackHost(bindHost)) return bindHost;
  for (const w of workers) {
    if (w.via === undefined || isLoopbackHost(w.via)) continue;
    const local = await localAddressToward(w.via, 9).catch(() => undefined);
    if (local !== undefined && !isLoopbackHost(local)) return local;
  }
  for (const list of Object.values(networkInterfaces())) for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  return hostname();
}

/**
 * Where a worker's /metrics can be scraped, or undefined when only its own host could: bound to every interface, its
 * advertised address; bound to one, that one; bound to loopback, 127.0.0.1 when it runs on the coordinator's host
 * (where this targets file and its Prometheus are), and nowhere otherwise. A worker that did not say where its
 * metrics listen is listed at its advertised address.
 */
export function workerScrapeHost(w: Pick<WorkerRecord, 'host' | 'via' | 'metricsHost'>, coordinatorAddresses: ReadonlySet<string>): string | undefined {
  if (w.metricsHost === undefined || isWildcardHost(w.metricsHost)) return w.host;
  if (!isLoopbackHost(w.metricsHost)) return w.metricsHost;
  const local = w.via !== undefined && (isLoopbackHost(w.via) || coordinatorAddresses.has(w.via));
  return local ? w.metricsHost : undefined;
}

/** The coordinator and every active worker whose /metrics someone can reach, with their labels. */
export function scrapeTargets(
  self: { host: string; port: number; instanceName: string },
  active: readonly WorkerRecord[],
  coordinatorAddresses: ReadonlySet<string>,
): { targets: ScrapeTarget[]; unscrapable: WorkerRecord[] } {
  const targets: ScrapeTarget[] = [{ host: self.host, port: self.port, labels: { role: 'coordinator', instance_name: self.instanceName } }];
  const unscrapable: WorkerRecord[] = [];
  for (const w of active.filter((x) => x.metricsPort > 0)) {
    const host = workerScrapeHost(w, coordinatorAddresses);
    if (host === undefined) unscrapable.push(w);
    else targets.push({ host, port: w.metricsPort, labels: { role: 'worker', rank: String(w.rank) } });
  }
  return { targets, unscrapable };
}
