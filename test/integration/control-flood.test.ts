import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import * as zmq from 'zeromq';
import { decode, encode } from '../../src/shared/wire/codec.js';
import { PROTOCOL_VERSION } from '../../src/shared/wire/control-messages.js';
import { startCli, type BackgroundProcess } from '../helpers/cli.js';
import { httpGet } from '../helpers/http.js';
import { freePort } from '../helpers/net.js';
import { StopPolling, until } from '../helpers/poll.js';

// Issue #15, "Figures and checks": 10 000 malformed control frames plus frames above the limit sent to a real
// `mnist-ddp coordinator` process crash nothing, are every one counted, and raise its RSS by at most 50 MiB.
// Plaintext on loopback: malformed-frame handling and maxMessageSize sit above the transport's security.

const MALFORMED = 10_000;
/** Oversize frames: 256 MiB each, as in the issue (libzmq refuses them from the size header, so this is fast). */
const OVERSIZE = 3;
const OVERSIZE_BYTES = 256 * 1024 * 1024;
const MAX_RSS_GROWTH = 50 * 1024 * 1024;

const REPO = new URL('../..', import.meta.url).pathname;
const hello = (host: string): Buffer => encode({ type: 'hello', protocolVersion: PROTOCOL_VERSION, host, pid: 1, instance: 0, metricsPort: 0 });

/** The i-th malformed frame: garbage bytes, wrong MessagePack shapes, unknown types, truncated and multi-part frames. */
function malformed(i: number): Buffer | Buffer[] {
  const valid = hello(`flood-${i}`);
  switch (i % 10) {
    case 0: { // garbage: xorshift bytes
      const b = Buffer.alloc(1 + (i % 61));
      let s = i + 1;
      for (let k = 0; k < b.length; k++) { s ^= s << 13; s ^= s >>> 17; s ^= s << 5; b[k] = s & 0xff; }
      return b;
    }
    case 1: return Buffer.from([0xc1, i & 0xff, 0x00]); // 0xc1: never used in MessagePack
    case 2: return encode({ type: 'hello', protocolVersion: 'one', host: i });
    case 3: return encode({ type: `no-such-type-${i}`, step: i });
    case 4: return encode([1, 2, i]);
    case 5: return encode(i);
    case 6: return valid.subarray(0, 1 + (i % (valid.length - 1))); // truncated
    case 7: return Buffer.alloc(0);
    case 8: return [Buffer.from('a'), Buffer.from(String(i))]; // [identity, a, b]: three parts
    default: return encode({ type: 'join', workerId: i });
  }
}

function rssBytes(pid: number): number {
  const kb = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
  if (!kb) throw new Error(`no VmRSS for ${pid}`);
  return Number(kb) * 1024;
}

/** Sum of `name`'s samples in an exposition whose labels include `label` (e.g. reason="malformed"); undefined if none. */
function metric(body: string, name: string, label = ''): number | undefined {
  let sum: number | undefined;
  for (const line of body.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})? (\S+)/.exec(line);
    if (!m || m[1] !== name || !(m[2] ?? '').includes(label)) continue;
    sum = (sum ?? 0) + Number(m[3]);
  }
  return sum;
}

async function replyTo(dealer: zmq.Dealer, frame: Buffer, timeoutMs = 10_000): Promise<Record<string, unknown>> {
  await dealer.send(frame);
  const result = await Promise.race([
    dealer.receive(),
    new Promise<never>((_, reject) => setTimeout(() => reject(new Error('no reply from the coordinator')), timeoutMs)),
  ]);
  return decode(result[result.length - 1]!) as Record<string, unknown>;
}

const sockets: zmq.Socket[] = [];
let coordinator: BackgroundProcess | undefined;
let dir: string | undefined;
afterAll(async () => {
  for (const s of sockets.splice(0)) s.close();
  await coordinator?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function dealer(endpoint: string): zmq.Dealer {
  const d = new zmq.Dealer({ linger: 0, sendTimeout: 10_000 });
  sockets.push(d);
  d.connect(endpoint);
  return d;
}

describe('a coordinator process under a flood of malformed and oversize control frames', () => {
  it(`counts ${MALFORMED} malformed and ${OVERSIZE} oversize frames exactly, keeps serving, RSS +≤ 50 MiB`, async () => {
    dir = mkdtempSync(join(tmpdir(), 'mnist-ddp-flood-'));
    const [controlPort, metricsPort] = [await freePort(), await freePort()];
    const control = `tcp://127.0.0.1:${controlPort}`;
    coordinator = startCli('coordinator', [
      'coordinator', '--bind', control, '--min-workers', '2', '--metrics-host', '127.0.0.1', '--coordinator-metrics-port', String(metricsPort),
      '--run-dir', join(dir, 'run'), '--model', 'mlp', '--train-subset', '500', '--validation-size', '100', '--backend', 'wasm', '--no-report',
    ], { cwd: REPO, keepChars: 8_000, env: { MNIST_DDP_LOG_LEVEL: 'error' } });
    const proc = coordinator;
    const logs = (): string => `\ncoordinator output:\n${proc.output()}`;
    const alive = (): void => { if (!proc.running()) throw new StopPolling(`the coordinator exited (${proc.child.exitCode})`); };
    const scrape = async (): Promise<string> => (await httpGet(metricsPort, '/metrics')).body;

    // Up and serving: a hello gets a welcome (the control socket binds after the model and data are ready).
    const first = dealer(control);
    const welcome = await until('a welcome from the coordinator', async () => { alive(); return replyTo(first, hello('before')); }, 60_000, logs);
    expect(welcome.type).toBe('welcome');
    const before = await until('/metrics', async () => { alive(); return scrape(); }, 30_000, logs);
    const rejectedName = 'mnistddp_rejected_frames_total';
    const droppedName = 'mnistddp_connections_dropped_total';
    expect(metric(before, rejectedName, 'reason="malformed"')).toBe(0);
    const droppedBefore = metric(before, droppedName);
    expect(droppedBefore).toBeDefined();
    const pid = proc.child.pid!;
    const rssBefore = rssBytes(pid);

    // 10 000 malformed frames from one DEALER, awaited one by one (each send is queued, not delivered, when it resolves).
    const flooder = dealer(control);
    for (let i = 0; i < MALFORMED; i++) await flooder.send(malformed(i));
    let lastBody = '';
    await until(`${MALFORMED} malformed frames counted`, async () => {
      alive();
      lastBody = await scrape();
      return (metric(lastBody, rejectedName, 'reason="malformed"') ?? 0) >= MALFORMED ? true : undefined;
    }, 30_000, () => `\nlast: ${metric(lastBody, rejectedName, 'reason="malformed"')}${logs()}`);
    const rssMid = rssBytes(pid);

    // Frames above maxMessageSize, one DEALER each: libzmq reads the size header, drops the connection, never
    // allocates the frame. The sockets stay open, so every dropped connection counted is an oversize frame.
    const big = Buffer.alloc(OVERSIZE_BYTES, 0xc1);
    const t0 = performance.now();
    for (let i = 0; i < OVERSIZE; i++) await dealer(control).send(big);
    await until(`${OVERSIZE} oversize connections dropped`, async () => {
      alive();
      lastBody = await scrape();
      return (metric(lastBody, droppedName) ?? 0) >= droppedBefore! + OVERSIZE ? true : undefined;
    }, 30_000, () => `\nlast dropped: ${metric(lastBody, droppedName)} (before ${droppedBefore})${logs()}`);
    const oversizeMs = performance.now() - t0;

    // Still answering, with a fresh DEALER.
    expect((await replyTo(dealer(control), hello('after'))).type).toBe('welcome');
    const after = await scrape();
    const rssAfter = rssBytes(pid);
    console.log(`coordinator RSS ${(rssBefore / 2 ** 20).toFixed(1)} → ${(rssMid / 2 ** 20).toFixed(1)} (after malformed) → ${(rssAfter / 2 ** 20).toFixed(1)} MiB (after oversize); ${OVERSIZE} × ${OVERSIZE_BYTES / 2 ** 20} MiB dropped in ${oversizeMs.toFixed(0)} ms`);

    expect(proc.running()).toBe(true);
    expect(metric(after, rejectedName, 'reason="malformed"')).toBe(MALFORMED);
    expect(metric(after, rejectedName, 'reason="unexpected"')).toBe(0);
    expect(metric(after, droppedName)).toBe(droppedBefore! + OVERSIZE);
    expect(rssAfter - rssBefore).toBeLessThanOrEqual(MAX_RSS_GROWTH);
  }, 90_000);
});
