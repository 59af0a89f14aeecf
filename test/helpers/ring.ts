import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openRingInbox, RingAllReducer, type RingConfig, type RingInbox } from '../../src/worker/ring/ring-allreduce.js';

export type Transport = 'tcp' | 'ipc';

/** A bind address no other test uses: an OS-chosen tcp port, or a fresh ipc path under os.tmpdir(). */
function uniqueBindAddress(transport: Transport): string {
  return transport === 'tcp' ? 'tcp://127.0.0.1:*' : `ipc://${join(tmpdir(), `mnist-ddp-ring-${process.pid}-${randomBytes(6).toString('hex')}`)}`;
}

export async function openInboxes(transport: Transport, n: number): Promise<RingInbox[]> {
  const inboxes: RingInbox[] = [];
  for (let i = 0; i < n; i++) inboxes.push(await openRingInbox(uniqueBindAddress(transport)));
  return inboxes;
}

/** Connects `n` ranks in this process; every reducer is also pushed onto `registry` so afterEach can close it. */
export async function connectRing(
  transport: Transport,
  n: number,
  registry: RingAllReducer[],
  overrides: Partial<RingConfig> = {},
): Promise<RingAllReducer[]> {
  const inboxes = await openInboxes(transport, n);
  const peers = inboxes.map((i) => i.endpoint);
  const reducers = await Promise.all(
    inboxes.map((inbox, rank) =>
      RingAllReducer.connect({ rank, worldSize: n, generation: 1, peers, timeoutMs: 10_000, ...overrides }, { inbox }),
    ),
  );
  registry.push(...reducers);
  return reducers;
}
