import { request } from 'node:http';
import { PNG } from 'pngjs';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runServe, type RunningServer } from '../../src/commands/serve.js';
import { serveConfigSchema } from '../../src/shared/core/config.js';
import { gatherBatch, loadMnist, type MnistSplit } from '../../src/shared/data/mnist.js';
import { loadModelDir } from '../../src/shared/model/io.js';
import { normalise, preprocessRgba } from '../../src/serve/preprocess.js';
import { slowClient, zeroPng, type SlowClientKind } from '../helpers/hostile-http.js';
import { predictClasses, trainedModelDir } from '../helpers/trained-model.js';

const COUNT = 1000;
const PNG_COUNT = 60;

let server: RunningServer;
let base: string;
let model: tf.LayersModel;
let test: MnistSplit;

interface Prediction { probabilities: number[]; predicted: number }

function digitPng(split: MnistSplit, index: number, { invert = false, scale = 1 } = {}): Buffer {
  const side = 28 * scale;
  const png = new PNG({ width: side, height: side });
  for (let y = 0; y < side; y++) {
    for (let x = 0; x < side; x++) {
      const v = split.images[index * 784 + Math.floor(y / scale) * 28 + Math.floor(x / scale)]!;
      const g = invert ? 255 - v : v;
      const o = 4 * (y * side + x);
      png.data[o] = png.data[o + 1] = png.data[o + 2] = g;
      png.data[o + 3] = 255;
    }
  }
  return PNG.sync.write(png);
}

async function post(body: BodyInit | Buffer, contentType: string): Promise<Response> {
  return fetch(`${base}predict`, { method: 'POST', headers: { 'Content-Type': contentType }, body: Buffer.isBuffer(body) ? new Uint8Array(body) : body });
}

async function postPixels(pixels: number[]): Promise<Prediction> {
  const res = await post(JSON.stringify({ pixels }), 'application/json');
  expect(res.status).toBe(200);
  return (await res.json()) as Prediction;
}

async function expectError(res: Response, status: number, code: string): Promise<void> {
  expect(res.status).toBe(status);
  expect(res.headers.get('content-type')).toMatch(/^application\/json/);
  const body = (await res.json()) as { error: { code: string; message: string } };
  expect(body.error.code).toBe(code);
  expect(body.error.message.length).toBeGreaterThan(10);
}

/** Runs `fn` over items with at most `limit` requests in flight. */
async function mapLimit<T, R>(items: T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  await Promise.all(Array.from({ length: limit }, async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!);
    }
  }));
  return out;
}

beforeAll(async () => {
  const checkpoint = await trainedModelDir();
  server = await runServe(serveConfigSchema.parse({ checkpoint, port: 0, backend: 'wasm' }), { stdout: () => {} });
  base = server.url;
  model = await loadModelDir(checkpoint);
  test = loadMnist().test;
});

afterAll(async () => {
  await server?.close();
  model?.dispose();
});

describe('POST /predict agrees with in-process evaluation', () => {
  it(`JSON pixels: ${COUNT} test images, same predictions and accuracy`, async () => {
    const indices = Int32Array.from({ length: COUNT }, (_, i) => i);
    const batch = gatherBatch(test.images, test.labels, indices);
    const local = predictClasses(model, batch.x, COUNT);
    const remote = await mapLimit([...indices], 8, (i) => postPixels(Array.from(test.images.subarray(i * 784, (i + 1) * 784), (v) => v / 255)));
    let agree = 0;
    let correctLocal = 0;
    let correctRemote = 0;
    let worst = 0;
    for (let i = 0; i < COUNT; i++) {
      const r = remote[i]!;
      if (r.predicted === local.predicted[i]) agree++;
      if (local.predicted[i] === test.labels[i]) correctLocal++;
      if (r.predicted === test.labels[i]) correctRemote++;
      for (let k = 0; k < 10; k++) worst = Math.max(worst, Math.abs(r.probabilities[k]! - local.probabilities[i * 10 + k]!));
    }
    expect(agree).toBe(COUNT);
    expect(correctRemote).toBe(correctLocal);
    expect(correctLocal / COUNT).toBeGreaterThan(0.9);
    // Batch-of-500 vs batch-of-1 kernels may sum in a different order.
    expect(worst).toBeLessThan(1e-4);
  });

  it(`PNG: ${PNG_COUNT} test images give the in-process prediction of the same preprocessing`, async () => {
    const indices = Array.from({ length: PNG_COUNT }, (_, i) => 1000 + i);
    const remote = await mapLimit(indices, 4, async (i) => {
      const res = await post(digitPng(test, i), 'image/png');
      expect(res.status).toBe(200);
      return (await res.json()) as Prediction;
    });
    const x = new Float32Array(PNG_COUNT * 784);
    indices.forEach((i, n) => {
      const decoded = PNG.sync.read(digitPng(test, i));
      x.set(normalise(preprocessRgba(decoded.data, decoded.width, decoded.height)), n * 784);
    });
    const local = predictClasses(model, x, PNG_COUNT);
    expect(remote.map((r) => r.predicted)).toEqual(local.predicted);
    const correct = remote.filter((r, n) => r.predicted === test.labels[indices[n]!]).length;
    expect(correct / PNG_COUNT).toBeGreaterThan(0.85);
  });

  it('a black-on-white PNG (mean > 0.5) is inverted: same answer as white-on-black, at any size', async () => {
    for (const i of [0, 1, 2, 3, 4]) {
      const plain = (await (await post(digitPng(test, i), 'image/png')).json()) as Prediction;
      const inverted = (await (await post(digitPng(test, i, { invert: true, scale: 3 }), 'image/png')).json()) as Prediction;
      expect(inverted.predicted).toBe(plain.predicted);
    }
  });
});

describe('bad requests get a 4xx JSON error and the server keeps serving', () => {
  const valid = (): Promise<Prediction> => postPixels(Array.from(test.images.subarray(0, 784), (v) => v / 255));

  it.each([
    ['wrong pixel count', () => post(JSON.stringify({ pixels: [0.5, 0.5] }), 'application/json'), 400, 'BAD_REQUEST'],
    ['pixel out of range', () => post(JSON.stringify({ pixels: new Array(784).fill(2) }), 'application/json'), 400, 'BAD_REQUEST'],
    ['pixels not an array', () => post(JSON.stringify({ pixels: 'abc' }), 'application/json'), 400, 'BAD_REQUEST'],
    ['malformed JSON', () => post('{"pixels": [0.1,', 'application/json'), 400, 'BAD_REQUEST'],
    ['not an image', () => post('definitely not a png', 'image/png'), 400, 'BAD_REQUEST'],
    ['truncated PNG', () => post(new Uint8Array(digitPng(test, 0).subarray(0, 60)), 'image/png'), 400, 'BAD_REQUEST'],
    ['unsupported media type', () => post('hello', 'text/plain'), 415, 'BAD_REQUEST'],
    ['body over 1 MiB', () => post(new Uint8Array(2 * 1024 * 1024), 'image/png'), 413, 'PAYLOAD_TOO_LARGE'],
    ['GET /predict', () => fetch(`${base}predict`), 405, 'METHOD_NOT_ALLOWED'],
    ['DELETE /', () => fetch(base, { method: 'DELETE' }), 405, 'METHOD_NOT_ALLOWED'],
    ['unknown path', () => fetch(`${base}nope`), 404, 'NOT_FOUND'],
  ] as const)('%s', async (_name, send, status, code) => {
    await expectError(await send(), status, code);
    expect((await valid()).probabilities).toHaveLength(10);
  });

  it('a body over 1 MiB without Content-Length (chunked) is also refused', async () => {
    const chunk = new Uint8Array(256 * 1024);
    const stream = new ReadableStream<Uint8Array>({
      start(controller) {
        for (let i = 0; i < 8; i++) controller.enqueue(chunk);
        controller.close();
      },
    });
    const res = await fetch(`${base}predict`, {
      method: 'POST', headers: { 'Content-Type': 'image/png' }, body: stream, duplex: 'half',
    } as RequestInit & { duplex: 'half' });
    await expectError(res, 413, 'PAYLOAD_TOO_LARGE');
    expect((await valid()).predicted).toBeGreaterThanOrEqual(0);
  });
});

describe('static files', () => {
  it('serves the page, its scripts and a model that stock tf.loadLayersModel loads over HTTP', async () => {
    const page = await fetch(base);
    expect(page.headers.get('content-type')).toMatch(/text\/html/);
    expect(await page.text()).toContain('<canvas id="pad"');
    for (const path of ['app.js', 'preprocess.js', 'tf.min.js']) {
      const res = await fetch(`${base}${path}`);
      expect(res.status, path).toBe(200);
      expect(res.headers.get('content-type')).toMatch(/javascript/);
    }
    const loaded = await tf.loadLayersModel(`${base}model/model.json`);
    const x = gatherBatch(test.images, test.labels, [7]).x;
    const a = tf.tidy(() => (loaded.predict(tf.tensor4d(x, [1, 28, 28, 1])) as tf.Tensor).dataSync());
    const b = tf.tidy(() => (model.predict(tf.tensor4d(x, [1, 28, 28, 1])) as tf.Tensor).dataSync());
    expect(Array.from(a)).toEqual(Array.from(b));
    loaded.dispose();
  });
});

// Issue #15: serve's bounded input. A PNG's dimensions are checked from its header before anything is decoded, and
// slow clients are disconnected within the configured timeouts, while normal requests keep being answered.
describe('bounded input (issue #15)', () => {
  /** POST /predict on a fresh connection; the time runs from the first body byte written to the last answer byte. */
  function timedPost(port: number, body: Buffer, contentType = 'image/png'): Promise<{ status: number; code: string | undefined; ms: number }> {
    return new Promise((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port, path: '/predict', method: 'POST', agent: false, timeout: 10_000,
        headers: { 'Content-Type': contentType, 'Content-Length': body.length } }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const ms = performance.now() - t0;
          const parsed = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { error?: { code: string } };
          resolve({ status: res.statusCode ?? 0, code: parsed.error?.code, ms });
        });
      });
      req.on('timeout', () => req.destroy(new Error('no answer within 10 s')));
      req.on('error', reject);
      const t0 = performance.now();
      req.end(body);
    });
  }

  it('a 12000×12000 PNG bomb (~140 KB) gets a 413 within 50 ms, and a normal PNG sent at the same time succeeds', async () => {
    const bomb = zeroPng(12000, 12000);
    expect(bomb.length).toBeLessThan(200_000);
    const rssBefore = process.memoryUsage().rss;
    const times: number[] = [];
    for (let i = 0; i < 5; i++) {
      const [refused, normal] = await Promise.all([timedPost(server.port, bomb), timedPost(server.port, digitPng(test, i))]);
      expect(refused.status).toBe(413);
      expect(refused.code).toBe('PAYLOAD_TOO_LARGE');
      expect(normal.status).toBe(200);
      times.push(refused.ms);
    }
    // The best of five, so that one descheduling of this shared test machine is not read as decoding work: decoding
    // the bomb took 5.6 s before the header check.
    expect(Math.min(...times)).toBeLessThan(50);
    expect(process.memoryUsage().rss - rssBefore).toBeLessThan(100 * 1024 * 1024);
  });

  it('decoding is bounded: 1024×1024 is decoded, 1025 on either side is refused from the header', async () => {
    expect((await timedPost(server.port, zeroPng(1024, 1024))).status).toBe(200);
    for (const [w, h] of [[1025, 28], [28, 1025]] as const) {
      const res = await timedPost(server.port, zeroPng(w, h));
      expect([res.status, res.code]).toEqual([413, 'PAYLOAD_TOO_LARGE']);
    }
  });

  it('an interlaced 28×28 PNG whose data inflates to 64 MiB is refused with 400 before pngjs inflates it', async () => {
    const bomb = zeroPng(28, 28, { interlaced: true, inflatedBytes: 64 * 1024 * 1024 });
    const rssBefore = process.memoryUsage().rss;
    const res = await timedPost(server.port, bomb);
    expect([res.status, res.code]).toEqual([400, 'BAD_REQUEST']);
    expect(process.memoryUsage().rss - rssBefore).toBeLessThan(32 * 1024 * 1024);
    // A well-formed interlaced image of the same size is still accepted.
    expect((await timedPost(server.port, zeroPng(28, 28, { interlaced: true }))).status).toBe(200);
  });

  describe('slow clients', () => {
    const HEADERS_TIMEOUT_MS = 400;
    const REQUEST_TIMEOUT_MS = 800;
    /** Node checks the timeouts every headersTimeout / 4 (see http.ts); the rest is scheduling on a busy machine. */
    const SLACK_MS = HEADERS_TIMEOUT_MS / 4 + 400;
    let slowServer: RunningServer;

    beforeAll(async () => {
      slowServer = await runServe(serveConfigSchema.parse({
        checkpoint: await trainedModelDir(), port: 0, backend: 'wasm', headersTimeoutMs: HEADERS_TIMEOUT_MS, requestTimeoutMs: REQUEST_TIMEOUT_MS,
      }), { stdout: () => {} });
    });
    afterAll(async () => {
      await slowServer?.close();
    });

    it('120 clients trickling headers, trickling bodies or silent are all disconnected within the timeouts; a normal request meanwhile succeeds', async () => {
      const bound: Record<SlowClientKind, number> = { headers: HEADERS_TIMEOUT_MS, silent: HEADERS_TIMEOUT_MS, body: REQUEST_TIMEOUT_MS };
      const kinds: SlowClientKind[] = ['headers', 'body', 'silent'];
      const clients = Array.from({ length: 120 }, (_, i) => {
        const kind = kinds[i % 3]!;
        return slowClient(slowServer.port, kind, 50, 4 * (bound[kind] + SLACK_MS));
      });
      const normal = await timedPost(slowServer.port, digitPng(test, 0));
      expect(normal.status).toBe(200);
      const closed = await Promise.all(clients.map((c) => c.closedAfterMs));
      for (const kind of kinds) {
        const times = closed.filter((_, i) => clients[i]!.kind === kind);
        expect(Math.max(...times), `${kind}: ${times.map(Math.round).join(', ')}`).toBeLessThan(bound[kind] + SLACK_MS);
      }
      // Trickled headers and bodies are answered 408 before the close; a silent socket is just closed.
      expect(clients.filter((c) => c.kind !== 'silent').every((c) => c.received().startsWith('HTTP/1.1 408'))).toBe(true);
      expect((await timedPost(slowServer.port, digitPng(test, 1))).status).toBe(200);
    });
  });
});
