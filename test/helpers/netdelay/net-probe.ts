/**
 * Traffic for the delay tests, one role per process (run inside a lab namespace with
 * `node --import tsx test/helpers/netdelay/net-probe.ts <role> ...`). Every role prints JSON lines.
 *   tcp-echo HOST PORT                    → {"listening":PORT}, then echoes every byte back
 *   tcp-ping HOST PORT COUNT              → {"rttMs":[...]}: COUNT one-byte round trips, Nagle off
 *   udp-sink HOST UDP_PORT TCP_PORT       → {"listening":true}; a TCP request "N\n" on TCP_PORT is answered with
 *                                           {"received":R,"missing":[sequence numbers below N never received]}
 *   udp-send HOST UDP_PORT TCP_PORT COUNT → sends COUNT numbered datagrams, then asks the sink, prints its answer
 *   tcp-sink HOST PORT                    → {"listening":PORT}; per connection, reads an 8-byte length, then that
 *                                           many bytes, then answers one byte
 *   tcp-bulk HOST PORT BYTES              → {"bytes":BYTES,"seconds":S}: from connect to the sink's answer
 * The sender asks over TCP on the same link after its last datagram: the delayer keeps packet order, so by the time
 * the request arrives every datagram sent before it has arrived or been dropped (no waiting for stragglers).
 */
import { createSocket } from 'node:dgram';
import { connect, createServer, type Socket } from 'node:net';
import { createInterface } from 'node:readline';

const [role, host = '', ...rest] = process.argv.slice(2);
const out = (value: unknown): boolean => process.stdout.write(`${JSON.stringify(value)}\n`);
const DATAGRAM_BYTES = 100;
/** Datagrams per event-loop turn: bursts small enough for the sink's default receive buffer after the delay. */
const BURST = 20;

function firstLine(socket: Socket): Promise<string> {
  return new Promise((resolve, reject) => {
    const lines = createInterface({ input: socket });
    lines.once('line', (line) => {
      lines.close();
      resolve(line);
    });
    socket.once('error', reject);
  });
}

function connected(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port, noDelay: true }, () => resolve(socket));
    socket.once('error', reject);
  });
}

if (role === 'tcp-echo') {
  const port = Number(rest[0]);
  const server = createServer({ noDelay: true }, (s) => s.on('data', (d) => s.write(d)));
  server.listen(port, host, () => out({ listening: port }));
} else if (role === 'tcp-ping') {
  const [port, count] = rest.map(Number) as [number, number];
  const socket = await connected(port);
  const rttMs: number[] = [];
  for (let i = 0; i < count; i++) {
    const t0 = performance.now();
    await new Promise<void>((resolve) => {
      socket.once('data', () => resolve());
      socket.write('x');
    });
    rttMs.push(performance.now() - t0);
  }
  socket.end();
  out({ rttMs });
} else if (role === 'udp-sink') {
  const [udpPort, tcpPort] = rest.map(Number) as [number, number];
  const seen = new Set<number>();
  const udp = createSocket('udp4');
  udp.on('message', (m) => seen.add(m.readUInt32BE(0)));
  await new Promise<void>((resolve) => udp.bind(udpPort, host, resolve));
  const server = createServer({ noDelay: true }, (s) => {
    void firstLine(s).then((line) => {
      const expected = Number(line);
      const missing: number[] = [];
      for (let i = 0; i < expected; i++) if (!seen.has(i)) missing.push(i);
      s.end(`${JSON.stringify({ received: seen.size, missing })}\n`);
    });
  });
  server.listen(tcpPort, host, () => out({ listening: true }));
} else if (role === 'udp-send') {
  const [udpPort, tcpPort, count] = rest.map(Number) as [number, number, number];
  const udp = createSocket('udp4');
  const payload = Buffer.alloc(DATAGRAM_BYTES);
  for (let i = 0; i < count; i += BURST) {
    const sends: Promise<void>[] = [];
    for (let j = i; j < Math.min(count, i + BURST); j++) {
      const datagram = Buffer.from(payload);
      datagram.writeUInt32BE(j, 0);
      sends.push(new Promise((resolve, reject) => udp.send(datagram, udpPort, host, (err) => (err ? reject(err) : resolve()))));
    }
    await Promise.all(sends);
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
  udp.close();
  const socket = await connected(tcpPort);
  socket.write(`${count}\n`);
  out(JSON.parse(await firstLine(socket)));
  socket.end();
} else if (role === 'tcp-sink') {
  const port = Number(rest[0]);
  const server = createServer({ noDelay: true }, (s) => {
    let expected = -1;
    let received = 0;
    let header = Buffer.alloc(0);
    s.on('data', (d: Buffer) => {
      if (expected < 0) {
        header = Buffer.concat([header, d]);
        if (header.length < 8) return;
        expected = Number(header.readBigUInt64BE(0));
        received = header.length - 8;
      } else {
        received += d.length;
      }
      if (received >= expected) s.end('k');
    });
  });
  server.listen(port, host, () => out({ listening: port }));
} else if (role === 'tcp-bulk') {
  const [port, bytes] = rest.map(Number) as [number, number];
  const t0 = performance.now();
  const socket = await connected(port);
  const header = Buffer.alloc(8);
  header.writeBigUInt64BE(BigInt(bytes));
  socket.write(header);
  const block = Buffer.alloc(1 << 20, 7);
  const answered = new Promise<void>((resolve) => socket.once('data', () => resolve()));
  for (let sent = 0; sent < bytes; sent += block.length) {
    const part = bytes - sent < block.length ? block.subarray(0, bytes - sent) : block;
    if (!socket.write(part)) await new Promise((resolve) => socket.once('drain', resolve));
  }
  await answered;
  out({ bytes, seconds: (performance.now() - t0) / 1000 });
  socket.end();
} else {
  process.stderr.write(`net-probe: unknown role ${role}\n`);
  process.exit(1);
}
