import { describe, expect, it } from 'vitest';
import { unreachableInboxes, type InboxOwner } from '../../src/coordinator/inbox-reachability.js';
import { coordinatorScrapeHost, workerScrapeHost } from '../../src/coordinator/scrape-targets.js';
import { workerConfigSchema } from '../../src/shared/core/config.js';
import { endpointHost, isWildcardHost, localAddressToward, withHost } from '../../src/shared/wire/endpoints.js';

// Issue #16: which addresses a multi-host run advertises, accepts and lists for Prometheus.

describe('tcp endpoints as addresses', () => {
  it('reads and replaces the host, IPv6 in brackets', () => {
    expect(endpointHost('tcp://10.0.0.5:6001')).toBe('10.0.0.5');
    expect(endpointHost('tcp://[::1]:5555')).toBe('::1');
    expect(endpointHost('ipc:///tmp/ring-0')).toBeUndefined();
    expect(withHost('tcp://0.0.0.0:41234', '10.0.0.5')).toBe('tcp://10.0.0.5:41234');
    expect(withHost('tcp://0.0.0.0:41234', 'fd00::5')).toBe('tcp://[fd00::5]:41234');
    expect(['0.0.0.0', '::', '*'].every(isWildcardHost)).toBe(true);
    expect(isWildcardHost('127.0.0.1')).toBe(false);
  });

  it('finds the source address of the route to a host without sending anything', async () => {
    expect(await localAddressToward('127.0.0.1', 5555)).toBe('127.0.0.1');
  });
});

describe('inboxes no ring member could dial', () => {
  const w = (id: number, via: string | undefined): InboxOwner => ({ id, rank: id, pid: 100 + id, via });
  const local = new Set(['127.0.0.1', '10.1.0.1']);

  it('refuses a loopback inbox when another member is on another host, naming that member', () => {
    const ring = [w(0, '127.0.0.1'), w(1, '10.1.0.2')];
    const found = unreachableInboxes(ring, new Map([[0, 'tcp://127.0.0.1:4000'], [1, 'tcp://10.1.0.2:4000']]), local);
    expect(found.map((f) => f.worker.id)).toEqual([0]);
    expect(found[0]!.reason).toMatch(/loopback address tcp:\/\/127\.0\.0\.1:4000, but rank 1 \(worker 1, pid 101\) runs on another host \(it reaches the coordinator from 10\.1\.0\.2\)/);
  });

  it('accepts loopback inboxes when every member is on one host, the coordinator\'s addresses counting as loopback', () => {
    const ring = [w(0, '127.0.0.1'), w(1, '10.1.0.1')];
    expect(unreachableInboxes(ring, new Map([[0, 'tcp://127.0.0.1:4000'], [1, 'tcp://127.0.0.1:4001']]), local)).toEqual([]);
  });

  it('refuses a wildcard inbox, and does not judge members that did not say their route', () => {
    const ring = [w(0, '10.1.0.2'), w(1, undefined), w(2, '10.1.0.3')];
    const found = unreachableInboxes(ring, new Map([[0, 'tcp://0.0.0.0:4000'], [1, 'tcp://127.0.0.1:4000'], [2, 'tcp://10.1.0.3:4000']]), local);
    expect(found.map((f) => f.worker.id)).toEqual([0]);
    expect(found[0]!.reason).toMatch(/wildcard/);
  });
});

describe('Prometheus scrape addresses', () => {
  const coordinatorAddresses = new Set(['127.0.0.1', '10.1.0.1']);

  it('lists a worker where its /metrics listens: its advertised address for 0.0.0.0, loopback only beside the coordinator', () => {
    expect(workerScrapeHost({ host: '10.1.0.2', via: '10.1.0.2', metricsHost: '0.0.0.0' }, coordinatorAddresses)).toBe('10.1.0.2');
    expect(workerScrapeHost({ host: '10.1.0.2', via: '10.1.0.2', metricsHost: '10.9.0.2' }, coordinatorAddresses)).toBe('10.9.0.2');
    expect(workerScrapeHost({ host: '10.1.0.2', via: '10.1.0.2', metricsHost: '127.0.0.1' }, coordinatorAddresses)).toBeUndefined();
    expect(workerScrapeHost({ host: '10.1.0.1', via: '10.1.0.1', metricsHost: '127.0.0.1' }, coordinatorAddresses)).toBe('127.0.0.1');
    expect(workerScrapeHost({ host: '10.1.0.2', via: undefined, metricsHost: undefined }, coordinatorAddresses)).toBe('10.1.0.2');
  });

  it('never lists the coordinator at 127.0.0.1 when its /metrics binds every interface', async () => {
    expect(await coordinatorScrapeHost('127.0.0.1', 'tcp://0.0.0.0:5555', [])).toBe('127.0.0.1');
    expect(await coordinatorScrapeHost('0.0.0.0', 'tcp://10.1.0.1:5555', [])).toBe('10.1.0.1');
    expect(await coordinatorScrapeHost('0.0.0.0', 'tcp://0.0.0.0:5555', [{ via: '127.0.0.1' }])).not.toBe('127.0.0.1');
  });
});

describe('--ring-ports', () => {
  const parse = (ringPorts: string) => workerConfigSchema.safeParse({ ringPorts });

  it('parses FIRST-LAST into an inclusive range', () => {
    expect(parse('40000-40100').data?.ringPorts).toEqual({ first: 40000, last: 40100 });
    expect(parse('40000-40000').data?.ringPorts).toEqual({ first: 40000, last: 40000 });
  });

  it('rejects a reversed, out-of-range or malformed range', () => {
    for (const bad of ['40100-40000', '0-10', '65535-65536', '40000', 'a-b']) expect(parse(bad).success, bad).toBe(false);
  });
});
