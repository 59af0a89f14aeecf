import { connect, type Socket } from 'node:net';
import { crc32, deflateSync } from 'node:zlib';

function chunk(type: string, data: Buffer): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(data.length, 0);
  head.write(type, 4, 'latin1');
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(Buffer.concat([head.subarray(4), data])) >>> 0, 0);
  return Buffer.concat([head, data, crc]);
}

/** Adam7 passes: first column, first row, column step, row step. */
const ADAM7 = [[0, 0, 8, 8], [4, 0, 8, 8], [0, 4, 4, 8], [2, 0, 4, 4], [0, 2, 2, 4], [1, 0, 2, 2], [0, 1, 1, 2]] as const;

/** Bytes of 8-bit grayscale image data: one filter byte per row plus the row, per Adam7 pass when interlaced. */
function imageDataBytes(width: number, height: number, interlaced: boolean): number {
  if (!interlaced) return (width + 1) * height;
  return ADAM7.reduce((sum, [x0, y0, dx, dy]) => {
    const cols = Math.ceil(Math.max(0, width - x0) / dx);
    const rows = Math.ceil(Math.max(0, height - y0) / dy);
    return sum + (cols > 0 ? rows * (cols + 1) : 0);
  }, 0);
}

/**
 * A valid 8-bit grayscale PNG of width×height black pixels whose image data is `inflatedBytes` zeros (by default
 * what the dimensions need). Zeros deflate about 1000:1, which is the bomb: 12000×12000 is a body of about 140 KB
 * that decodes to 144 MB of samples and 576 MB of RGBA.
 */
export function zeroPng(width: number, height: number, opts: { interlaced?: boolean; inflatedBytes?: number } = {}): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 0; // grayscale
  ihdr[12] = opts.interlaced ? 1 : 0;
  const idat = deflateSync(Buffer.alloc(opts.inflatedBytes ?? imageDataBytes(width, height, opts.interlaced ?? false)), { level: 9 });
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr), chunk('IDAT', idat), chunk('IEND', Buffer.alloc(0)),
  ]);
}

export type SlowClientKind = 'headers' | 'body' | 'silent';

export interface SlowClient {
  kind: SlowClientKind;
  /** Milliseconds from connect to the server closing the connection; rejects after `deadlineMs`. */
  closedAfterMs: Promise<number>;
  /** Bytes the server wrote back before closing (e.g. a 408). */
  received: () => string;
}

/**
 * A slow-loris client on 127.0.0.1:`port`: 'headers' sends a request line and then one header byte every
 * `everyMs`, never finishing the headers; 'body' sends complete headers for a 4 KiB POST /predict and then one body
 * byte every `everyMs`; 'silent' connects and sends nothing. It never stops on its own: only the server can end it.
 */
export function slowClient(port: number, kind: SlowClientKind, everyMs: number, deadlineMs: number): SlowClient {
  const socket: Socket = connect(port, '127.0.0.1');
  const t0 = performance.now();
  let received = '';
  let timer: NodeJS.Timeout | undefined;
  socket.on('data', (d: Buffer) => (received += d.toString('latin1')));
  socket.on('error', () => {}); // ECONNRESET when the server cuts us off mid-write: 'close' follows
  socket.once('connect', () => {
    if (kind === 'silent') return;
    socket.write(kind === 'headers'
      ? 'POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\n'
      : 'POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\nContent-Length: 4096\r\n\r\n');
    timer = setInterval(() => {
      if (socket.writable) socket.write(kind === 'headers' ? 'X' : '\0'); // a header name that never ends; a body byte
    }, everyMs);
  });
  const closedAfterMs = new Promise<number>((resolve, reject) => {
    const deadline = setTimeout(() => {
      clearInterval(timer);
      socket.destroy();
      reject(new Error(`${kind} slow client was still connected after ${deadlineMs} ms`));
    }, deadlineMs);
    socket.once('close', () => {
      clearTimeout(deadline);
      clearInterval(timer);
      resolve(performance.now() - t0);
    });
  });
  return { kind, closedAfterMs, received: () => received };
}
