import * as zmq from 'zeromq';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ControlServer } from '../../src/coordinator/control-server.js';
import { RemoteWorkerGroup } from '../../src/coordinator/remote-group.js';
import { initBackend } from '../../src/shared/core/backend.js';
import { decode, encode } from '../../src/shared/wire/codec.js';
import { PROTOCOL_VERSION } from '../../src/shared/wire/control-messages.js';
import { componentLogger } from '../../src/shared/core/log.js';
import { describeLayout, paramLayout, type ParamLayout } from '../../src/shared/model/layout.js';
import { buildModel } from '../../src/shared/model/zoo.js';
import { SerialSender } from '../../src/shared/wire/sender.js';

// Issue #4: the handshake compares protocol, model and parameter layout and names both sides on a mismatch;
// malformed control frames are counted and crash nothing. Real ROUTER/DEALER sockets.

let server: ControlServer | undefined;
const sockets: zmq.Dealer[] = [];
afterEach(() => {
  for (const s of sockets.splice(0)) s.close();
  server?.close();
});

async function reply(dealer: zmq.Dealer, timeoutMs = 5000): Promise<Record<string, unknown>> {
  const result = await Promise.race([
    dealer.receive(),
    new Promise<never>((_, reject) => setTimeout(() => reject(new Error('no reply from the coordinator')), timeoutMs)),
  ]);
  return decode(result[result.length - 1]!) as Record<string, unknown>;
}

let cnnLayout: ParamLayout;

async function coordinator(options: { heartbeatTimeoutMs?: number; elastic?: boolean } = {}): Promise<{ endpoint: string; group: RemoteWorkerGroup }> {
  server = await ControlServer.bind('tcp://127.0.0.1:*', componentLogger('test'));
  const group = new RemoteWorkerGroup(server, {
    config: { model: 'cnn' }, model: 'cnn', layout: cnnLayout, requestTimeoutMs: 2000, stepTimeoutMs: 2000, heartbeatTimeoutMs: options.heartbeatTimeoutMs ?? 2000,
    digestEvery: 0, elastic: options.elastic ?? false, log: componentLogger('test'),
  });
  return { endpoint: server.endpoint, group };
}

function dealer(endpoint: string): zmq.Dealer {
  const d = new zmq.Dealer({ linger: 0 });
  d.connect(endpoint);
  sockets.push(d);
  return d;
}

const hello = { type: 'hello', protocolVersion: PROTOCOL_VERSION, host: 'test', pid: 1, instance: 0, metricsPort: 0 };

describe('coordinator handshake', () => {
  beforeAll(async () => {
    await initBackend('wasm');
    cnnLayout = paramLayout(buildModel('cnn', { seed: 1 }));
  });

  it('rejects a layout mismatch with an error that names both sides', async () => {
    const { endpoint } = await coordinator();
    const d = dealer(endpoint);
    await d.send(encode(hello));
    const welcome = await reply(d);
    expect(welcome.type).toBe('welcome');
    await d.send(encode({ type: 'join', workerId: welcome.workerId, model: 'cnn', layoutChecksum: 'deadbeefdeadbeef', shapes: ['conv1/kernel:3x3x1x16'] }));
    const rejected = await reply(d);
    expect(rejected).toMatchObject({ type: 'reject', code: 'HANDSHAKE_MISMATCH' });
    expect(rejected.message).toContain('deadbeefdeadbeef');
    expect(rejected.message).toContain('conv1/kernel:3x3x1x16');
    expect(rejected.message).toContain('conv1/kernel:3x3x1x32');
  });

  it('rejects another protocol version', async () => {
    const { endpoint } = await coordinator();
    const d = dealer(endpoint);
    await d.send(encode({ ...hello, protocolVersion: PROTOCOL_VERSION + 1 }));
    expect(await reply(d)).toMatchObject({ type: 'reject', code: 'HANDSHAKE_MISMATCH' });
  });

  it('counts malformed and unexpected frames and keeps serving', async () => {
    const { endpoint } = await coordinator();
    const d = dealer(endpoint);
    await d.send(Buffer.from([0xc1, 0xff, 0x00]));
    await d.send(encode({ type: 'hello', protocolVersion: 'one' }));
    await d.send(encode([1, 2, 3]));
    await d.send(encode({ type: 'step-done', generation: 9, step: 1, rank: 0, loss: 1, globalCount: 1, localCount: 1, computeMs: 1, allReduceMs: 1, applyMs: 1 }));
    await d.send([Buffer.from('a'), Buffer.from('b')]);
    await d.send(encode(hello));
    expect((await reply(d)).type).toBe('welcome');
    expect(server!.rejected.malformed).toBe(4);
    expect(server!.rejected.unexpected).toBe(1);
  });
});

const state = (step: number): { weights: Float32Array; optimizer: { name: 'sgd'; step: number; slots: Float32Array[] } } => ({
  weights: new Float32Array([1, 2, 3]), optimizer: { name: 'sgd', step, slots: [new Float32Array([4, 5, 6])] },
});

/**
 * A scripted worker on a real DEALER: joins with the coordinator's layout, answers ring set-up and snapshot requests
 * (its replica has applied `appliedStep`), and sends a heartbeat every 100 ms until `silence()`.
 */
function fakeWorker(endpoint: string, appliedStep: number): { silence: () => void; loaded: (count: number) => Promise<number[]> } {
  const d = dealer(endpoint);
  const sender = new SerialSender<Buffer>((frame) => d.send(frame));
  const send = (m: object): void => void sender.send(encode(m)).catch(() => undefined);
  const loads: number[] = [];
  const waits: Array<() => void> = [];
  /** The appliedStep of every load-state received, once there are `count` of them (fails after 5 s). */
  const loaded = (count: number): Promise<number[]> => new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`only ${loads.length} of ${count} load-state messages arrived`)), 5000);
    const check = (): void => {
      if (loads.length < count) return;
      clearTimeout(timer);
      resolve([...loads]);
    };
    waits.push(check);
    check();
  });
  let heartbeat: NodeJS.Timeout | undefined;
  send(hello);
  void (async () => {
    try {
      for await (const frames of d) {
        const m = decode(frames[frames.length - 1]!) as Record<string, unknown> & { type: string };
        if (m.type === 'welcome') {
          send({ type: 'join', workerId: m.workerId, model: 'cnn', layoutChecksum: cnnLayout.checksum, shapes: describeLayout(cnnLayout) });
          heartbeat = setInterval(() => send({ type: 'heartbeat', workerId: m.workerId }), 100);
        } else if (m.type === 'open-inbox') send({ type: 'inbox', generation: m.generation, endpoint: 'tcp://127.0.0.1:1' });
        else if (m.type === 'ring') send({ type: 'ring-ready', generation: m.generation });
        else if (m.type === 'load-state') {
          loads.push(m.appliedStep as number);
          for (const wake of waits) wake();
        }
        else if (m.type === 'snapshot-request') send({ type: 'snapshot', requestId: m.requestId, appliedStep, ...state(appliedStep + 1) });
        else if (m.type === 'stop') break;
      }
    } catch {
      // the socket was closed by afterEach
    } finally {
      clearInterval(heartbeat);
    }
  })();
  return { silence: () => clearInterval(heartbeat), loaded };
}

// Issue #12: recovery awaits the moment a worker falls silent (or the heartbeat deadline), it does not poll.
describe('elastic recovery after a failed step', () => {
  beforeAll(async () => {
    await initBackend('wasm');
    cnnLayout = paramLayout(buildModel('cnn', { seed: 1 }));
  });

  it('drops a worker as soon as it has been silent for half the heartbeat timeout, and restores the survivor', async () => {
    const { endpoint, group } = await coordinator({ heartbeatTimeoutMs: 4000, elastic: true });
    const workers = [fakeWorker(endpoint, 6), fakeWorker(endpoint, 6)];
    await group.start(2, 5000, state(0), -1);
    expect([group.worldSize, group.generation]).toEqual([2, 1]);
    const silentAt = Date.now();
    workers[1]!.silence();
    const { appliedStep: applied } = await group.recover(7);
    const waited = Date.now() - silentAt;
    // Silent for > 2000 ms (half the timeout) ends the wait; the 4000 ms deadline does not come into it.
    expect(waited).toBeGreaterThanOrEqual(2000);
    expect(waited).toBeLessThan(3500);
    expect(applied).toBe(6);
    expect([group.worldSize, group.generation]).toEqual([1, 2]);
    expect(await workers[0]!.loaded(2)).toEqual([-1, 6]);
    expect(await workers[1]!.loaded(1)).toEqual([-1]);
    await group.close();
  });

  it('with every worker alive, waits out the heartbeat timeout and re-forms with all of them', async () => {
    const { endpoint, group } = await coordinator({ heartbeatTimeoutMs: 1000, elastic: true });
    const workers = [fakeWorker(endpoint, 3), fakeWorker(endpoint, 2)];
    await group.start(2, 5000, state(0), -1);
    const t0 = Date.now();
    const { appliedStep: applied } = await group.recover(4);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1000);
    // The survivor that applied the fewest steps is the source.
    expect(applied).toBe(2);
    expect([group.worldSize, group.generation]).toEqual([2, 2]);
    for (const w of workers) expect(await w.loaded(2)).toEqual([-1, 2]);
    await group.close();
  });
});
