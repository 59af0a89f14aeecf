import { afterEach, describe, expect, it } from 'vitest';
import { isMnistDdpError } from '../../src/shared/core/errors.js';
import { openRingInbox, RingAllReducer, type RingInbox } from '../../src/worker/ring/ring-allreduce.js';
import { freePort, freePortRange } from '../helpers/net.js';

// Issue #16 on real sockets, without namespaces: a ring whose successor's inbox cannot be connected to says so at
// once, naming the address (instead of waiting out its start-up deadline and blaming whichever rank is silent), and
// inboxes can be pinned to a port range for firewalls. test/e2e/multi-host.test.ts runs both across hosts.

const inboxes: RingInbox[] = [];
afterEach(() => {
  for (const inbox of inboxes.splice(0)) inbox.close();
});

describe('ring start-up against an unreachable inbox', () => {
  it('fails with PEER_UNREACHABLE naming the address and the rank, long before the start-up deadline', async () => {
    const own = await openRingInbox('tcp://127.0.0.1:*');
    inboxes.push(own);
    // Nothing listens there: the connection is refused.
    const nowhere = `tcp://127.0.0.1:${await freePort()}`;
    const t0 = Date.now();
    const err = await RingAllReducer.connect({ rank: 0, worldSize: 2, generation: 3, peers: [own.endpoint, nowhere], timeoutMs: 20_000 }, { inbox: own }).then(
      () => new Error('connected to an address where nothing listens'),
      (e: unknown) => e,
    );
    expect(isMnistDdpError(err) && err.code, String(err)).toBe('PEER_UNREACHABLE');
    expect((err as Error).message).toContain(nowhere);
    expect(isMnistDdpError(err) && err.details.missingRank).toBe(1);
    expect(Date.now() - t0, 'connect → failure (ms), against a 20 s deadline').toBeLessThan(5_000);
  });

  it('leaves an inbox it was given open when start-up fails, so the predecessor can still connect to it', async () => {
    const own = await openRingInbox('tcp://127.0.0.1:*');
    inboxes.push(own);
    await RingAllReducer.connect({ rank: 0, worldSize: 2, generation: 1, peers: [own.endpoint, `tcp://127.0.0.1:${await freePort()}`], timeoutMs: 20_000 }, { inbox: own }).catch(() => undefined);
    expect(own.socket.closed).toBe(false);
  });
});

describe('ring inbox port range (--ring-ports)', () => {
  it('binds ports of the range only, and fails with PORT_RANGE_EXHAUSTED naming it when every one is taken', async () => {
    const first = await freePortRange(2);
    const ports = { first, last: first + 1 };
    for (let i = 0; i < 2; i++) inboxes.push(await openRingInbox('tcp://127.0.0.1:*', { ports }));
    expect(inboxes.map((i) => Number(/:(\d+)$/.exec(i.endpoint)?.[1])).sort()).toEqual([first, first + 1]);
    const err = await openRingInbox('tcp://127.0.0.1:*', { ports }).then((i) => (inboxes.push(i), new Error('bound a third inbox in a range of two')), (e: unknown) => e);
    expect(isMnistDdpError(err) && err.code, String(err)).toBe('PORT_RANGE_EXHAUSTED');
    expect((err as Error).message).toContain(`${first}-${first + 1}`);
  });
});
