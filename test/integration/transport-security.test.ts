import { chmodSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { createServer, connect, type AddressInfo, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { Registry } from 'prom-client';
import { afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import * as zmq from 'zeromq';
import { ControlServer } from '../../src/coordinator/control-server.js';
import { initBackend } from '../../src/shared/core/backend.js';
import { isMnistDdpError } from '../../src/shared/core/errors.js';
import { componentLogger } from '../../src/shared/core/log.js';
import { createTransportMetrics, type TransportMetrics } from '../../src/shared/metrics/index.js';
import { buildModel, MODEL_NAMES } from '../../src/shared/model/zoo.js';
import { KEY_FILES, loadCoordinatorKeys, loadWorkerKeys, newKeyPair, writeKeyDir, type CurveKeyPair } from '../../src/shared/security/keys.js';
import { coordinatorSecurity, curveClientOptions, workerSecurity, type CoordinatorSecurity } from '../../src/shared/security/transport.js';
import { encode } from '../../src/shared/wire/codec.js';
import { PROTOCOL_VERSION, type WorkerMessage } from '../../src/shared/wire/control-messages.js';
import { controlFrameLimit, WORKER_CONTROL_FRAME_LIMIT } from '../../src/shared/wire/frame-limits.js';
import type { RingChunk } from '../../src/shared/wire/ring-messages.js';
import { ControlClient } from '../../src/worker/control-client.js';
import { openRingInbox, RingAllReducer, type RingInbox } from '../../src/worker/ring/ring-allreduce.js';
import { randomFloats } from '../helpers/random.js';

// Issue #15: CURVE on every ZeroMQ socket (control ROUTER/DEALER, ring PUSH/PULL), ZAP allow-lists, frames bound to
// their sender, bounded frames and stash. Real sockets on unique addresses; refusals are awaited as the counter
// rises, never slept for.

const dirs: string[] = [];
const sockets: zmq.Socket[] = [];
const servers: ControlServer[] = [];
const reducers: RingAllReducer[] = [];
const inboxes: RingInbox[] = [];
const relays: Server[] = [];
afterEach(async () => {
  for (const s of sockets.splice(0)) s.close();
  for (const s of servers.splice(0)) s.close();
  await Promise.all(reducers.splice(0).map((r) => r.close()));
  for (const i of inboxes.splice(0)) i.close();
  await Promise.all(relays.splice(0).map((r) => new Promise((resolve) => r.close(resolve))));
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

const log = componentLogger('test');

function keyDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'mnist-ddp-keys-test-'));
  dirs.push(dir);
  writeKeyDir(dir);
  return dir;
}

/** A logger whose lines land in `lines` (as parsed JSON). */
function capturingLogger(lines: Record<string, unknown>[]): pino.Logger {
  return pino({ level: 'warn' }, new Writable({ write(chunk: Buffer, _enc, done) { lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>); done(); } }));
}

const MARKER = 'MARKER-plaintext-7f3a';
const hello = (host = MARKER): WorkerMessage => ({ type: 'hello', protocolVersion: PROTOCOL_VERSION, host, pid: 1, instance: 0, metricsPort: 0 });

async function controlServer(security: CoordinatorSecurity, metrics: TransportMetrics, logger = log, maxMessageSize = controlFrameLimit(1000)): Promise<{ server: ControlServer; received: WorkerMessage[] }> {
  const server = await ControlServer.bind('tcp://127.0.0.1:*', logger, undefined, { security, maxMessageSize, observer: metrics });
  servers.push(server);
  const received: WorkerMessage[] = [];
  server.onMessage((_peer, m) => received.push(m));
  return { server, received };
}

/**
 * A forger's frames are never delivered, so its sends stay pending; zeromq.js then refuses the next send at once
 * (synchronously, 'Socket is busy writing'). Either way the frame is dropped, which is all a forger test needs.
 */
function fireAndForget(socket: zmq.Writable, frame: Buffer): void {
  try {
    void socket.send(frame).catch(() => undefined);
  } catch {
    // a send already in flight: this frame is simply not sent
  }
}

/**
 * A refused handshake leaves a DEALER without a peer, and a DEALER's send waits for one: the send deadline makes a
 * send that lost that race fail instead of hanging the test.
 */
function dealer(endpoint: string, options: Partial<zmq.SocketOptions<zmq.Dealer>> = {}): zmq.Dealer {
  const d = new zmq.Dealer({ linger: 0, sendTimeout: 2000, ...options });
  sockets.push(d);
  d.connect(endpoint);
  return d;
}

async function counterValue(metrics: TransportMetrics, reason?: string): Promise<number> {
  const values = (await (reason ? metrics.authRefused : metrics.connectionsDropped).get()).values;
  return values.filter((v) => !reason || v.labels.reason === reason).reduce((a, v) => a + v.value, 0);
}

/** A TCP relay to `target` (tcp://host:port) that records every byte in both directions: a capture of the wire. */
async function recordingRelay(target: string): Promise<{ endpoint: string; bytes: () => Buffer }> {
  const [, host, port] = /^tcp:\/\/([^:]+):(\d+)$/.exec(target)!;
  const captured: Buffer[] = [];
  const open: Socket[] = [];
  const server = createServer((client) => {
    const upstream = connect(Number(port), host);
    open.push(client, upstream);
    client.on('data', (b) => { captured.push(Buffer.from(b)); upstream.write(b); });
    upstream.on('data', (b) => { captured.push(Buffer.from(b)); client.write(b); });
    const end = (): void => { client.destroy(); upstream.destroy(); };
    client.on('close', end).on('error', end);
    upstream.on('close', end).on('error', end);
  });
  server.on('close', () => open.forEach((s) => s.destroy()));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  relays.push(server);
  const closeAll = server.close.bind(server);
  server.close = ((cb?: (err?: Error) => void) => { open.forEach((s) => s.destroy()); return closeAll(cb); }) as typeof server.close;
  return { endpoint: `tcp://127.0.0.1:${(server.address() as AddressInfo).port}`, bytes: () => Buffer.concat(captured) };
}

describe('key directories (mnist-ddp keygen)', () => {
  it('writes a 0700 directory with 0600 secret keys, loads both roles, and refuses a secret key others can read', () => {
    const dir = keyDir();
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    expect(statSync(join(dir, KEY_FILES.coordinatorSecret)).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, KEY_FILES.workerSecret)).mode & 0o777).toBe(0o600);
    const coordinator = loadCoordinatorKeys(dir);
    const worker = loadWorkerKeys(dir);
    expect(worker.serverKey).toBe(coordinator.server.publicKey);
    expect([...coordinator.allowed.keys()]).toEqual(['worker.pub']);
    expect(() => writeKeyDir(dir)).toThrow(/already exists/);
    chmodSync(join(dir, KEY_FILES.coordinatorSecret), 0o644);
    expect(() => loadCoordinatorKeys(dir)).toThrow(expect.objectContaining({ code: 'KEYS_INVALID' }));
  });

  it('is secure by default: no keys off loopback is TRANSPORT_INSECURE; loopback or --insecure run plaintext', () => {
    const check = (f: () => unknown): string | undefined => { try { f(); return undefined; } catch (err) { return isMnistDdpError(err) ? err.code : String(err); } };
    expect(check(() => coordinatorSecurity({ insecure: false }, 'tcp://0.0.0.0:5555', log))).toBe('TRANSPORT_INSECURE');
    expect(check(() => workerSecurity({ insecure: false }, ['tcp://10.0.0.5:5555', 'tcp://127.0.0.1:*'], log))).toBe('TRANSPORT_INSECURE');
    expect(coordinatorSecurity({ insecure: false }, 'tcp://127.0.0.1:5555', log).mode).toBe('plaintext');
    expect(coordinatorSecurity({ insecure: true }, 'tcp://0.0.0.0:5555', log).mode).toBe('plaintext');
    expect(coordinatorSecurity({ insecure: false, keys: keyDir() }, 'tcp://0.0.0.0:5555', log).mode).toBe('curve');
  });

  it('sizes the worker control limit for the largest zoo model', async () => {
    await initBackend('wasm');
    for (const name of MODEL_NAMES) {
      const weights = buildModel(name, { seed: 1 }).weights.reduce((n, w) => n + w.shape.reduce<number>((a, d) => a * (d ?? 1), 1), 0);
      expect(controlFrameLimit(weights), name).toBeLessThanOrEqual(WORKER_CONTROL_FRAME_LIMIT);
    }
  });
});

describe('control socket with CURVE', () => {
  let dir: string;
  let security: CoordinatorSecurity;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'mnist-ddp-keys-test-'));
    writeKeyDir(dir);
    security = { mode: 'curve', keys: loadCoordinatorKeys(dir) };
    return () => rmSync(dir, { recursive: true, force: true });
  });

  it('never admits a DEALER without keys or with a key off the allow-list; counts each refusal and logs once per address', async () => {
    const metrics = createTransportMetrics(new Registry());
    const lines: Record<string, unknown>[] = [];
    const { server, received } = await controlServer(security, metrics, capturingLogger(lines));
    const stranger: CurveKeyPair = newKeyPair();
    const serverKey = security.mode === 'curve' ? security.keys.server.publicKey : '';
    // Refused peers: the handshake is what gets counted, so a send that never leaves is fine.
    await dealer(server.endpoint).send(encode(hello('no-keys'))).catch(() => undefined);
    await dealer(server.endpoint, curveClientOptions(stranger, serverKey)).send(encode(hello('not-allowed'))).catch(() => undefined);
    await vi.waitFor(async () => {
      expect(await counterValue(metrics, 'no-curve')).toBeGreaterThanOrEqual(1);
      expect(await counterValue(metrics, 'key-not-allowed')).toBeGreaterThanOrEqual(1);
    }, { timeout: 5000 });
    // A second stranger from the same address: counted, not logged again.
    const before = await counterValue(metrics, 'key-not-allowed');
    await dealer(server.endpoint, curveClientOptions(newKeyPair(), serverKey)).send(encode(hello('not-allowed-2'))).catch(() => undefined);
    await vi.waitFor(async () => expect(await counterValue(metrics, 'key-not-allowed')).toBeGreaterThan(before), { timeout: 5000 });

    const worker = loadWorkerKeys(dir);
    await dealer(server.endpoint, curveClientOptions(worker.client, worker.serverKey)).send(encode(hello('allowed')));
    await vi.waitFor(() => expect(received.length).toBeGreaterThanOrEqual(1), { timeout: 5000 });
    expect(received.map((m) => (m.type === 'hello' ? m.host : m.type))).toEqual(['allowed']);
    expect(server.rejected).toEqual({ malformed: 0, unexpected: 0 });
    const refusalLines = lines.filter((l) => l.address === '127.0.0.1');
    expect(refusalLines).toHaveLength(1);
    expect(String(refusalLines[0]!.msg)).toContain('not allowed');
  });

  it('a worker whose key is refused fails fast with AUTH_REFUSED instead of waiting out its deadline', async () => {
    const { server } = await controlServer(security, createTransportMetrics(new Registry()));
    const serverKey = security.mode === 'curve' ? security.keys.server.publicKey : '';
    const client = ControlClient.connect(server.endpoint, log, { security: { mode: 'curve', keys: { client: newKeyPair(), serverKey } }, maxMessageSize: WORKER_CONTROL_FRAME_LIMIT });
    try {
      await client.send(hello());
      await expect(client.next(20_000)).rejects.toMatchObject({ code: 'AUTH_REFUSED' });
    } finally {
      client.close();
    }
  });

  it.each([true, false])('the bytes on the wire hold no plaintext msgpack with CURVE (curve: %s)', async (curve) => {
    const metrics = createTransportMetrics(new Registry());
    const { server, received } = await controlServer(curve ? security : { mode: 'plaintext' }, metrics);
    const relay = await recordingRelay(server.endpoint);
    const worker = loadWorkerKeys(dir);
    await dealer(relay.endpoint, curve ? curveClientOptions(worker.client, worker.serverKey) : {}).send(encode(hello()));
    await vi.waitFor(() => expect(received).toHaveLength(1), { timeout: 5000 });
    const wire = relay.bytes();
    expect(wire.length).toBeGreaterThan(64);
    expect(wire.includes(Buffer.from(MARKER))).toBe(!curve);
    expect(wire.includes(Buffer.from('protocolVersion'))).toBe(!curve);
  });

  it('drops a frame above maxMessageSize with its connection, counts it, and keeps serving', async () => {
    const metrics = createTransportMetrics(new Registry());
    const { server, received } = await controlServer(security, metrics, log, controlFrameLimit(1000));
    const worker = loadWorkerKeys(dir);
    const d = dealer(server.endpoint, curveClientOptions(worker.client, worker.serverKey));
    await d.send(encode(hello('before')));
    await vi.waitFor(() => expect(received).toHaveLength(1), { timeout: 5000 });
    await d.send(Buffer.alloc(4 * 1024 * 1024, 0xc1));
    await vi.waitFor(async () => expect(await counterValue(metrics)).toBe(1), { timeout: 5000 });
    await d.send(encode(hello('after')));
    await vi.waitFor(() => expect(received).toHaveLength(2), { timeout: 5000 });
    expect(received.map((m) => (m.type === 'hello' ? m.host : m.type))).toEqual(['before', 'after']);
    expect(server.rejected.malformed).toBe(0);
  });
});

describe('ring with CURVE', () => {
  const length = 5000;

  /** A 2-rank CURVE ring; rank 0 may push through `via` (a relay in front of rank 1's inbox). */
  async function curveRing(metrics: TransportMetrics, via?: (endpoint: string) => Promise<string>, curve = true): Promise<{ ring: RingAllReducer[]; keys: CurveKeyPair[] }> {
    const keys = [newKeyPair(), newKeyPair()];
    const opened = await Promise.all(keys.map((keyPair, rank) => openRingInbox('tcp://127.0.0.1:*', {
      log, observer: metrics, ...(curve ? { curve: { keyPair, allowKey: keys[1 - rank]!.publicKey } } : {}),
    })));
    const peers = opened.map((i) => i.endpoint);
    const rank0Peers = via ? [peers[0]!, await via(peers[1]!)] : peers;
    const ring = await Promise.all(opened.map((inbox, rank) => RingAllReducer.connect(
      { rank, worldSize: 2, generation: 3, peers: rank === 0 ? rank0Peers : peers, timeoutMs: 10_000 },
      { inbox, logger: log, observer: metrics, ...(curve ? { curve: { keyPair: keys[rank]!, peerKeys: keys.map((k) => k.publicKey) } } : {}) },
    )));
    reducers.push(...ring);
    return { ring, keys };
  }

  it('a forged ring-chunk from a process that is not the predecessor never gets in and changes nothing', async () => {
    const metrics = createTransportMetrics(new Registry());
    const { ring, keys } = await curveRing(metrics);
    const [rank0, rank1] = ring as [RingAllReducer, RingAllReducer];
    // The forger knows rank 1's public key (public keys are not secret) and claims to be rank 0, this generation,
    // the next steps, adding 20 to every value: the issue's attack. It holds its own key, not rank 0's.
    const forged = (step: number, segment: number, phase: RingChunk['phase']): RingChunk => ({
      type: 'ring-chunk', generation: 3, step, rank: 0, phase, segment, chunk: 0, data: new Float32Array(length / 2).fill(20),
    });
    const forger = new zmq.Push({ linger: 0, ...curveClientOptions(newKeyPair(), keys[1]!.publicKey) });
    const plainForger = new zmq.Push({ linger: 0 });
    sockets.push(forger, plainForger);
    forger.connect(rank1.endpoint);
    plainForger.connect(rank1.endpoint);
    for (const step of [0, 1]) {
      for (const f of [forged(step, 0, 'reduce-scatter'), forged(step, 1, 'all-gather')]) {
        fireAndForget(forger, encode(f));
        fireAndForget(plainForger, encode(f));
      }
    }
    await vi.waitFor(async () => {
      expect(await counterValue(metrics, 'key-not-allowed')).toBeGreaterThanOrEqual(1);
      expect(await counterValue(metrics, 'no-curve')).toBeGreaterThanOrEqual(1);
    }, { timeout: 5000 });
    for (const step of [0, 1]) {
      const inputs = [randomFloats(length, 10 + step), randomFloats(length, 20 + step)];
      const results = await Promise.all(ring.map((r, rank) => r.allReduce(inputs[rank]!.slice(), step)));
      for (const r of results) for (let i = 0; i < length; i += 97) expect(r[i]).toBeCloseTo(inputs[0]![i]! + inputs[1]![i]!, 5);
    }
    expect(rank1.rejectedFrames).toEqual({ malformed: 0, stale: 0, duplicate: 0, unexpected: 0 });
    expect(rank0.rejectedFrames).toEqual({ malformed: 0, stale: 0, duplicate: 0, unexpected: 0 });
  });

  it.each([true, false])('ring bytes on the wire hold no plaintext msgpack with CURVE (curve: %s)', async (curve) => {
    let relay: Awaited<ReturnType<typeof recordingRelay>> | undefined;
    const { ring } = await curveRing(createTransportMetrics(new Registry()), async (endpoint) => {
      relay = await recordingRelay(endpoint);
      return relay.endpoint;
    }, curve);
    const inputs = [randomFloats(length, 1), randomFloats(length, 2)];
    await Promise.all(ring.map((r, rank) => r.allReduce(inputs[rank]!.slice(), 0)));
    const wire = relay!.bytes();
    expect(wire.length).toBeGreaterThan(length * 2);
    for (const marker of ['ring-chunk', 'ring-hello', 'reduce-scatter', 'generation']) expect(wire.includes(Buffer.from(marker)), marker).toBe(!curve);
  });

  it('an inbox drops a frame above its limit with the connection and counts it', async () => {
    const metrics = createTransportMetrics(new Registry());
    const inbox = await openRingInbox('tcp://127.0.0.1:*', { chunkBytes: 4096, log, observer: metrics });
    inboxes.push(inbox);
    expect(inbox.maxMessageSize).toBeLessThan(200_000);
    const push = new zmq.Push({ linger: 0 });
    sockets.push(push);
    push.connect(inbox.endpoint);
    await push.send(Buffer.alloc(1024 * 1024, 1));
    await vi.waitFor(async () => expect(await counterValue(metrics)).toBe(1), { timeout: 5000 });
    await push.send(Buffer.from('small'));
    const [frame] = await inbox.socket.receive();
    expect(frame!.toString()).toBe('small');
  });

  it('refuses stashing frames for steps far ahead (plaintext intruder)', async () => {
    const metrics = createTransportMetrics(new Registry());
    const { ring } = await curveRing(metrics, undefined, false);
    const [, rank1] = ring as [RingAllReducer, RingAllReducer];
    await Promise.all(ring.map((r, rank) => r.allReduce(randomFloats(length, rank + 1), 0)));
    const intruder = new zmq.Push({ linger: 0 });
    sockets.push(intruder);
    intruder.connect(rank1.endpoint);
    await intruder.send(encode({ type: 'ring-chunk', generation: 3, step: 50, rank: 0, phase: 'reduce-scatter', segment: 0, chunk: 0, data: new Float32Array(length / 2) }));
    await vi.waitFor(() => expect(rank1.rejectedFrames.unexpected).toBe(1), { timeout: 5000 });
    const inputs = [randomFloats(length, 5), randomFloats(length, 6)];
    const results = await Promise.all(ring.map((r, rank) => r.allReduce(inputs[rank]!.slice(), 1)));
    for (let i = 0; i < length; i += 97) expect(results[1]![i]).toBeCloseTo(inputs[0]![i]! + inputs[1]![i]!, 5);
  });
});
