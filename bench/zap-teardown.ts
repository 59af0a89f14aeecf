/**
 * ZAP teardown stress: why the ZAP handler outlives its last domain (src/shared/security/zap.ts, HANDLER_GRACE_MS).
 *   npx tsx bench/zap-teardown.ts [--runs 6] [--lifetimes 1000]
 * Each run is a child process that lives through --lifetimes CURVE ROUTER lifetimes: the router binds with a ZAP
 * domain, three CURVE dealers connect and each send one frame, then the dealers and the router close and the domain
 * is unregistered, as a coordinator's control socket or a worker's ring inbox does at the end of a generation.
 * - `immediate`: a ZAP handler of this script's own, closed as soon as its domain is (what zap.ts did before);
 * - `product`: zap.ts's registerZapDomain / close.
 * Reports each run's exit (0, or the signal of a crash: libzmq 4.3.5 aborts in pipe.cpp:355 or segfaults).
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import * as zmq from 'zeromq';
import { registerZapDomain, uniqueZapDomain } from '../src/shared/security/zap.js';

const ZAP_ENDPOINT = 'inproc://zeromq.zap.01';

let stopping: Promise<void> | undefined;

/** A minimal ZAP handler that admits every CURVE client, closed by the caller; a new one waits for the last to close. */
async function immediateHandler(): Promise<{ domain: string; close(): Promise<void> }> {
  await stopping;
  const socket = new zmq.Router({ linger: 0 });
  await socket.bind(ZAP_ENDPOINT);
  void (async () => {
    try {
      for await (const [id, empty, , requestId] of socket) {
        if (!id || !empty || !requestId) continue;
        await socket.send([id, empty, Buffer.from('1.0'), requestId, Buffer.from('200'), Buffer.from('OK'), Buffer.alloc(0), Buffer.alloc(0)]);
      }
    } catch {
      // closed
    }
  })();
  return { domain: 'immediate', close: () => (stopping = socket.unbind(ZAP_ENDPOINT).catch(() => undefined).then(() => socket.close())) };
}

async function child(mode: 'immediate' | 'product', lifetimes: number): Promise<void> {
  const server = zmq.curveKeyPair();
  const client = zmq.curveKeyPair();
  for (let i = 0; i < lifetimes; i++) {
    const zap = mode === 'immediate' ? await immediateHandler() : await registerZapDomain(uniqueZapDomain('stress'), { allows: () => true });
    const router = new zmq.Router({ linger: 0, curveServer: true, curveSecretKey: server.secretKey, curvePublicKey: server.publicKey, zapDomain: zap.domain, zapEnforceDomain: true });
    await router.bind('tcp://127.0.0.1:*');
    const dealers = [0, 1, 2].map(() => new zmq.Dealer({ linger: 0, curveServerKey: server.publicKey, curvePublicKey: client.publicKey, curveSecretKey: client.secretKey }));
    for (const d of dealers) d.connect(router.lastEndpoint!);
    await Promise.all(dealers.map((d) => d.send('hello')));
    for (const _ of dealers) await router.receive();
    for (const d of dealers) d.close();
    router.close();
    void zap.close();
  }
}

const { values } = parseArgs({ options: { runs: { type: 'string', default: '6' }, lifetimes: { type: 'string', default: '1000' }, child: { type: 'string' } } });
if (values.child) {
  await child(values.child as 'immediate' | 'product', Number(values.lifetimes));
} else {
  const self = fileURLToPath(import.meta.url);
  for (const mode of ['immediate', 'product'] as const) {
    const exits: string[] = [];
    for (let r = 0; r < Number(values.runs); r++) {
      const res = spawnSync(process.execPath, [...process.execArgv, self, '--child', mode, '--lifetimes', values.lifetimes], { encoding: 'utf8', timeout: 300_000 });
      exits.push(res.signal ?? String(res.status));
    }
    const crashed = exits.filter((e) => e !== '0').length;
    console.log(`${mode}: ${crashed} of ${exits.length} runs crashed (${values.lifetimes} lifetimes each); exits: ${exits.join(' ')}`);
  }
}
