import * as zmq from 'zeromq';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ControlServer } from '../../src/coordinator/control-server.js';
import { RemoteWorkerGroup } from '../../src/coordinator/remote-group.js';
import { initBackend } from '../../src/shared/core/backend.js';
import { decode, encode } from '../../src/shared/wire/codec.js';
import { PROTOCOL_VERSION } from '../../src/shared/wire/control-messages.js';
import { componentLogger } from '../../src/shared/core/log.js';
import { paramLayout } from '../../src/shared/model/layout.js';
import { buildModel } from '../../src/shared/model/zoo.js';

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

async function coordinator(): Promise<{ endpoint: string; group: RemoteWorkerGroup }> {
  server = await ControlServer.bind('tcp://127.0.0.1:*', componentLogger('test'));
  const layout = paramLayout(buildModel('cnn', { seed: 1 }));
  const group = new RemoteWorkerGroup(server, {
    config: { model: 'cnn' }, model: 'cnn', layout, requestTimeoutMs: 2000, stepTimeoutMs: 2000, heartbeatTimeoutMs: 2000, digestEvery: 0, elastic: false, log: componentLogger('test'),
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
