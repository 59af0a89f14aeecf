import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { afterAll, describe, expect, it } from 'vitest';
import { componentLogger } from '../../src/shared/core/log.js';
import { createTransportMetrics, type TransportMetrics } from '../../src/shared/metrics/index.js';
import { newKeyPair } from '../../src/shared/security/keys.js';
import { encode } from '../../src/shared/wire/codec.js';
import type { RingChunk } from '../../src/shared/wire/ring-messages.js';
import { openRingInbox, RingAllReducer } from '../../src/worker/ring/ring-allreduce.js';
import { startProcess, type BackgroundProcess } from '../helpers/cli.js';
import { StopPolling, until } from '../helpers/poll.js';
import { randomFloats } from '../helpers/random.js';

// Issue #15, "Figures and checks": forged ring frames from a process that is not the claimed rank change nothing.
// The forger is a separate OS process (node with zeromq) that knows rank 1's inbox address and public key and pushes
// ring-chunk frames claiming rank 0, this generation and the coming steps, +20 on every value (the attack):
// over CURVE with its own key, over CURVE with rank 0's public key but not its secret, and in plaintext.

const REPO = new URL('../..', import.meta.url).pathname;
const length = 5000;
const log = componentLogger('test');

/** Pushes every frame of the JSON file argv[1] at its endpoint from each socket, one send at a time, prints "sent" once they are queued, then stays (retrying). */
const FORGER = `
const zmq = require('zeromq');
const spec = JSON.parse(require('fs').readFileSync(process.argv[1], 'utf8'));
const frames = spec.frames.map((f) => Buffer.from(f, 'base64'));
const held = []; // referenced until exit: an unreferenced socket is closed when collected
for (const options of spec.sockets) {
  const push = new zmq.Push({ linger: 0, ...options });
  held.push(push);
  push.connect(spec.endpoint);
  // One send in flight per socket (zeromq.js throws EBUSY otherwise, e.g. once a refused handshake makes them wait).
  let chain = Promise.resolve();
  for (const f of frames) chain = chain.then(() => push.send(f)).catch(() => undefined);
}
console.log('sent');
setInterval(() => held.length, 1000);
`;

const dirs: string[] = [];
const reducers: RingAllReducer[] = [];
let forger: BackgroundProcess | undefined;
afterAll(async () => {
  await forger?.stop(0);
  await Promise.all(reducers.splice(0).map((r) => r.close()));
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

async function refusals(metrics: TransportMetrics): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const v of (await metrics.authRefused.get()).values) out[String(v.labels.reason)] = v.value;
  return out;
}

describe('ring with CURVE against a forger in another process', () => {
  it('forged ring-chunks from a process that is not rank 0 never get in: every sum stays exact', async () => {
    const metrics = createTransportMetrics(new Registry());
    const keys = [newKeyPair(), newKeyPair()];
    const inboxes = await Promise.all(keys.map((keyPair, rank) => openRingInbox('tcp://127.0.0.1:*', { log, observer: metrics, curve: { keyPair, allowKey: keys[1 - rank]!.publicKey } })));
    const peers = inboxes.map((i) => i.endpoint);
    const ring = await Promise.all(inboxes.map((inbox, rank) => RingAllReducer.connect(
      { rank, worldSize: 2, generation: 3, peers, timeoutMs: 10_000 },
      { inbox, logger: log, observer: metrics, curve: { keyPair: keys[rank]!, peerKeys: keys.map((k) => k.publicKey) } },
    )));
    reducers.push(...ring);
    const [rank0, rank1] = ring as [RingAllReducer, RingAllReducer];

    const forged = (step: number, segment: number, phase: RingChunk['phase']): RingChunk => ({
      type: 'ring-chunk', generation: 3, step, rank: 0, phase, segment, chunk: 0, data: new Float32Array(length / 2).fill(20),
    });
    const frames = [0, 1, 2].flatMap((step) => [forged(step, 0, 'reduce-scatter'), forged(step, 1, 'all-gather'), forged(step, 1, 'reduce-scatter'), forged(step, 0, 'all-gather')]);
    const stranger = newKeyPair();
    const impostor = { ...newKeyPair(), publicKey: keys[0]!.publicKey }; // rank 0's public key, a secret key that is not rank 0's
    const client = (k: { publicKey: string; secretKey: string }) => ({ curveServer: false, curvePublicKey: k.publicKey, curveSecretKey: k.secretKey, curveServerKey: keys[1]!.publicKey });
    const dir = mkdtempSync(join(tmpdir(), 'mnist-ddp-forger-'));
    dirs.push(dir);
    const spec = join(dir, 'spec.json');
    writeFileSync(spec, JSON.stringify({ endpoint: rank1.endpoint, frames: frames.map((f) => encode(f).toString('base64')), sockets: [client(stranger), client(impostor), {}] }));

    forger = startProcess('forger', process.execPath, ['-e', FORGER, spec], { cwd: REPO, keepChars: 4_000 });
    const proc = forger;
    await until('the forger to send', () => {
      if (!proc.running()) throw new StopPolling(`the forger exited (${proc.child.exitCode}): ${proc.output()}`);
      return proc.stdout().includes('sent') ? true : undefined;
    }, 20_000);
    let last: Record<string, number> = {};
    await until('each forging socket refused at the handshake', async () => {
      last = await refusals(metrics);
      // The stranger's key is not allowed; the impostor cannot prove rank 0's key (bad-handshake). The plaintext socket
      // is counted as no-curve, or as bad-handshake (EPIPE) when it hangs up on the mechanism mismatch first: a race.
      return (last['key-not-allowed'] ?? 0) >= 1 && (last['bad-handshake'] ?? 0) + (last['no-curve'] ?? 0) >= 2 ? true : undefined;
    }, 10_000, () => `\nrefusals: ${JSON.stringify(last)}\nforger: ${proc.output()}`);

    // The forger keeps retrying throughout; steps 0..2 are the ones it forged.
    for (const step of [0, 1, 2]) {
      const inputs = [randomFloats(length, 10 + step), randomFloats(length, 20 + step)];
      const results = await Promise.all(ring.map((r, rank) => r.allReduce(inputs[rank]!.slice(), step)));
      for (const r of results) for (let i = 0; i < length; i++) expect(r[i]).toBe(Math.fround(inputs[0]![i]! + inputs[1]![i]!));
    }
    expect(proc.running()).toBe(true);
    expect(rank1.rejectedFrames).toEqual({ malformed: 0, stale: 0, duplicate: 0, unexpected: 0 });
    expect(rank0.rejectedFrames).toEqual({ malformed: 0, stale: 0, duplicate: 0, unexpected: 0 });
    console.log(`refusals while the forger ran: ${JSON.stringify(await refusals(metrics))}`);
  }, 60_000);
});
