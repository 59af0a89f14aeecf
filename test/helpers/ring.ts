import { randomBytes } from 'node:crypto';
import { expect } from 'vitest';
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

/**
 * Checks every rank's result against the float64 sum. Float32 summation of N terms in any order is off by at most
 * (N - 1) roundings of partial sums bounded by sum|x|, plus the rounding of the result: N * 2^-24 * sum|x|.
 */
export function expectExactSum(inputs: readonly Float32Array[], results: readonly Float32Array[]): void {
  const n = inputs.length;
  const length = inputs[0]?.length ?? 0;
  let worst = 0;
  for (let i = 0; i < length; i++) {
    let sum = 0;
    let magnitude = 0;
    for (const input of inputs) {
      sum += input[i] ?? 0;
      magnitude += Math.abs(input[i] ?? 0);
    }
    const tolerance = n * 2 ** -24 * magnitude;
    const error = Math.abs((results[0]?.[i] ?? Number.NaN) - sum) - tolerance;
    if (!(error <= 0)) worst = Math.max(worst, Number.isNaN(error) ? Infinity : error);
  }
  expect(worst).toBe(0);
  const reference = results[0];
  // Every rank must hold bit-identical sums, or the replicas drift apart.
  for (const r of results) expect(Buffer.compare(Buffer.from(r.buffer, r.byteOffset, r.byteLength), Buffer.from(reference!.buffer, reference!.byteOffset, reference!.byteLength))).toBe(0);
}
